// @peculiar/x509 resolves its ASN.1 codecs through tsyringe, which needs the Reflect metadata
// polyfill loaded first. Import x509 through this module everywhere so the order holds.
import 'reflect-metadata';

export * from '@peculiar/x509';
