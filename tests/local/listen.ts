/** Starts a local HTTP server and gives back its URL and a close() that ends kept-alive sockets too. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export async function listenLocally(
  server: Server,
  host: string,
  port: number,
): Promise<{ url: string; close: () => Promise<void> }> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
