import type { Tensor } from '../tensor/tensor.js';

/**
 * A tree of named parameters and sub-modules. Names join with dots, so a model's parameter
 * names are exactly the keys of its Hugging Face checkpoint.
 */
export abstract class Module {
  private readonly params = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();
  training = true;

  protected registerParameter(name: string, t: Tensor): Tensor {
    this.params.set(name, t);
    return t;
  }

  protected registerModule<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** Every parameter with its dotted path, in registration order. */
  *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    for (const [name, t] of this.params) yield [prefix + name, t];
    for (const [name, m] of this.children) yield* m.namedParameters(`${prefix}${name}.`);
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    for (const [name, m] of this.children) {
      const path = prefix + name;
      yield [path, m];
      yield* m.namedModules(`${path}.`);
    }
  }

  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, t]) => t);
  }

  trainableParameters(): Array<[string, Tensor]> {
    return [...this.namedParameters()].filter(([, t]) => t.requiresGrad);
  }

  getParameter(path: string): Tensor | undefined {
    const dot = path.lastIndexOf('.');
    const owner = dot < 0 ? this : this.getModule(path.slice(0, dot));
    return owner?.params.get(path.slice(dot + 1));
  }

  /** Replaces a parameter's tensor (loading weights); shapes are checked by the caller. */
  setParameter(path: string, t: Tensor): void {
    const dot = path.lastIndexOf('.');
    const owner = dot < 0 ? this : this.getModule(path.slice(0, dot));
    const name = path.slice(dot + 1);
    if (!owner || !owner.params.has(name)) throw new Error(`no parameter ${path}`);
    owner.params.set(name, t);
    owner.onParameterReplaced(name, t);
  }

  /** Lets a module keep its typed fields in step when a parameter is replaced. */
  protected onParameterReplaced(_name: string, _t: Tensor): void {}

  getModule(path: string): Module | undefined {
    let m: Module | undefined = this;
    for (const part of path.split('.')) {
      m = m?.children.get(part);
      if (!m) return undefined;
    }
    return m;
  }

  /** Swaps a sub-module in place (how LoRA wraps a Linear); the parent sees the new one. */
  replaceModule(path: string, replacement: Module): void {
    const dot = path.lastIndexOf('.');
    const parent = dot < 0 ? this : this.getModule(path.slice(0, dot));
    const name = path.slice(dot + 1);
    if (!parent || !parent.children.has(name)) throw new Error(`no module ${path}`);
    parent.children.set(name, replacement);
    parent.onModuleReplaced(name, replacement);
  }

  protected onModuleReplaced(_name: string, _m: Module): void {}

  /** Stops gradients for every parameter below this module. */
  freeze(): this {
    for (const t of this.parameters()) t.requiresGrad = false;
    return this;
  }

  unfreeze(): this {
    for (const t of this.parameters()) t.requiresGrad = true;
    return this;
  }

  train(on = true): this {
    this.training = on;
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  zeroGrad(): void {
    for (const t of this.parameters()) t.grad = null;
  }
}
