/**
 * `random_password` from hashicorp/random without the prebuilt @cdktf/provider-random package
 * (not a dependency here): a two-class binding is all this stack needs.
 */
import { TerraformProvider, TerraformResource, TerraformStack } from 'cdktf';
import type { Construct } from 'constructs';

export const RANDOM_PROVIDER_VERSION = '~> 3.7';
const RANDOM_PROVIDER_ID = 'random-provider';

class RandomProvider extends TerraformProvider {
  constructor(scope: Construct, id: string) {
    super(scope, id, {
      terraformResourceType: 'random',
      terraformGeneratorMetadata: {
        providerName: 'random',
        providerVersionConstraint: RANDOM_PROVIDER_VERSION,
      },
      terraformProviderSource: 'hashicorp/random',
    });
  }
}

export interface RandomPasswordOptions {
  readonly length: number;
  /** Letters and digits only when false: the value travels in an HTTP header. */
  readonly special: boolean;
}

export class RandomPassword extends TerraformResource {
  private readonly options: RandomPasswordOptions;

  constructor(scope: Construct, id: string, options: RandomPasswordOptions) {
    super(scope, id, {
      terraformResourceType: 'random_password',
      terraformGeneratorMetadata: {
        providerName: 'random',
        providerVersionConstraint: RANDOM_PROVIDER_VERSION,
      },
    });
    const stack = TerraformStack.of(scope);
    if (!stack.node.tryFindChild(RANDOM_PROVIDER_ID)) new RandomProvider(stack, RANDOM_PROVIDER_ID);
    this.options = options;
  }

  /** The generated value (sensitive in Terraform state and plan output). */
  get result(): string {
    return this.getStringAttribute('result');
  }

  protected override synthesizeAttributes(): Record<string, unknown> {
    return { length: this.options.length, special: this.options.special };
  }

  protected override synthesizeHclAttributes(): Record<string, unknown> {
    return {
      length: { value: this.options.length, type: 'simple', storageClassType: 'number' },
      special: { value: this.options.special, type: 'simple', storageClassType: 'boolean' },
    };
  }
}
