/**
 * Terraform reads `${...}` and `%{...}` in any JSON string as its own template syntax; AWS policy
 * variables such as `${iot:Connection.Thing.ThingName}` must reach AWS literally, so they are
 * written `$${...}`. Only for literal text: a string holding cdktf tokens must not pass through.
 */
export function escapeTerraformTemplate(text: string): string {
  return text.replace(/\$\{/g, () => '$${').replace(/%\{/g, () => '%%{');
}

export function unescapeTerraformTemplate(text: string): string {
  return text.replace(/\$\$\{/g, () => '${').replace(/%%\{/g, () => '%{');
}
