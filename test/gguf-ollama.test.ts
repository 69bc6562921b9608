/**
 * The Ollama Modelfile written with `--ollama`: its TEMPLATE, rendered as Go's text/template
 * renders it (by the small interpreter below, which covers the constructs the templates use:
 * range, if / else if / else, eq, ne, not, and, or, index, fields, variables and trim markers),
 * must give exactly the text our Jinja chat template gives for the same conversation, so a model
 * served by Ollama sees the prompt format it was trained on; and its stop parameters must end a turn.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { exportGguf } from '../src/io/gguf-export.js';
import { modelfileText, ollamaTemplate, recogniseTemplate } from '../src/io/gguf-ollama.js';
import { initModel } from '../src/io/init-model.js';
import { BUILTIN_TEMPLATES, renderChat } from '../src/text/chat-template.js';
import type { BuiltinTemplateName, ChatMessage } from '../src/text/chat-template.js';

// ---------------------------------------------------------------------------------------------
// A Go text/template interpreter for the subset the Modelfile templates use.

type GoValue = unknown;
type Node =
  | { kind: 'text'; text: string }
  | { kind: 'output'; expr: string }
  | { kind: 'if'; branches: Array<{ cond: string | null; body: Node[] }> }
  | { kind: 'range'; expr: string; vars: string[]; body: Node[] };

function parseGoTemplate(src: string): Node[] {
  // Split into text and actions, applying the trim markers.
  const parts: Array<{ text?: string; action?: string }> = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      parts.push({ text: src.slice(i) });
      break;
    }
    let text = src.slice(i, open);
    const close = src.indexOf('}}', open);
    let action = src.slice(open + 2, close);
    if (action.startsWith('- ')) {
      text = text.replace(/\s+$/, '');
      action = action.slice(2);
    }
    let trimAfter = false;
    if (action.endsWith(' -')) {
      action = action.slice(0, -2);
      trimAfter = true;
    }
    parts.push({ text }, { action: action.trim() });
    i = close + 2;
    if (trimAfter) while (i < src.length && /\s/.test(src[i])) i++;
  }
  let pos = 0;
  const block = (stopAt: string[]): { nodes: Node[]; stop: string } => {
    const nodes: Node[] = [];
    while (pos < parts.length) {
      const p = parts[pos++];
      if (p.text !== undefined) {
        if (p.text) nodes.push({ kind: 'text', text: p.text });
        continue;
      }
      const a = p.action!;
      const word = a.split(/\s+/)[0];
      if (stopAt.includes(word)) return { nodes, stop: a };
      if (word === 'if') {
        const branches: Array<{ cond: string | null; body: Node[] }> = [];
        let cond: string | null = a.slice(3);
        for (;;) {
          const { nodes: body, stop } = block(['else', 'end']);
          branches.push({ cond, body });
          if (stop === 'end') break;
          cond = stop.startsWith('else if ') ? stop.slice(8) : null;
        }
        nodes.push({ kind: 'if', branches });
      } else if (word === 'range') {
        const m = /^range\s+(?:(\$\w+)\s*,\s*(\$\w+)\s*:=\s*)?(.+)$/.exec(a)!;
        const { nodes: body } = block(['end']);
        nodes.push({ kind: 'range', expr: m[3], vars: m[1] ? [m[1], m[2]] : [], body });
      } else nodes.push({ kind: 'output', expr: a });
    }
    return { nodes, stop: '' };
  };
  return block([]).nodes;
}

function truthy(v: GoValue): boolean {
  if (Array.isArray(v)) return v.length > 0;
  return v !== undefined && v !== null && v !== false && v !== '' && v !== 0;
}

function evalExpr(expr: string, dot: GoValue, vars: Record<string, GoValue>): GoValue {
  const tokens = expr.match(/"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+/g) ?? [];
  let pos = 0;
  const field = (base: GoValue, path: string): GoValue =>
    path.split('.').filter(Boolean).reduce((v, k) => (v as Record<string, GoValue> | undefined)?.[k], base);
  const operand = (): GoValue => {
    const t = tokens[pos++];
    if (t === '(') {
      const v = command(')');
      pos++; // ')'
      const next = tokens[pos];
      if (next?.startsWith('.')) {
        pos++;
        return field(v, next);
      }
      return v;
    }
    if (t.startsWith('"')) return JSON.parse(t);
    if (/^\d+$/.test(t)) return Number(t);
    if (t === '.') return dot;
    if (t.startsWith('.')) return field(dot, t);
    if (t.startsWith('$')) {
      const [name, ...rest] = t.split('.');
      return field(vars[name], rest.join('.'));
    }
    throw new Error(`Go template: unexpected ${t}`);
  };
  /** A function call or a single operand, up to `end` (or the end of the expression). */
  const command = (end?: string): GoValue => {
    const fn = tokens[pos];
    const fns = ['eq', 'ne', 'not', 'and', 'or', 'index'];
    if (!fns.includes(fn)) return operand();
    pos++;
    const args: Array<() => GoValue> = [];
    while (pos < tokens.length && tokens[pos] !== end) {
      const start = pos;
      operand();
      const stop = pos;
      args.push(() => {
        const saved = pos;
        pos = start;
        const v = operand();
        pos = saved;
        void stop;
        return v;
      });
    }
    switch (fn) {
      case 'eq':
        return args[0]() === args[1]();
      case 'ne':
        return args[0]() !== args[1]();
      case 'not':
        return !truthy(args[0]());
      case 'and': {
        let v: GoValue = true;
        for (const a of args) if (!truthy((v = a()))) return v;
        return v;
      }
      case 'or': {
        let v: GoValue = false;
        for (const a of args) if (truthy((v = a()))) return v;
        return v;
      }
      case 'index':
        return (args[0]() as GoValue[])[args[1]() as number];
    }
    return undefined;
  };
  return command();
}

function renderGo(nodes: Node[], dot: GoValue, vars: Record<string, GoValue> = {}): string {
  let out = '';
  for (const n of nodes) {
    if (n.kind === 'text') out += n.text;
    else if (n.kind === 'output') out += String(evalExpr(n.expr, dot, vars));
    else if (n.kind === 'if') {
      const branch = n.branches.find((b) => b.cond === null || truthy(evalExpr(b.cond, dot, vars)));
      if (branch) out += renderGo(branch.body, dot, vars);
    } else {
      const list = evalExpr(n.expr, dot, vars) as GoValue[];
      list.forEach((item, i) => {
        const scope = n.vars.length ? { ...vars, [n.vars[0]]: i, [n.vars[1]]: item } : vars;
        out += renderGo(n.body, item, scope);
      });
    }
  }
  return out;
}

/** What Ollama renders for a conversation. */
function renderOllama(template: string, messages: ChatMessage[]): string {
  const data = { Messages: messages.map((m) => ({ Role: m.role, Content: m.content })) };
  return renderGo(parseGoTemplate(template), data);
}

// ---------------------------------------------------------------------------------------------

const CONVERSATIONS: ChatMessage[][] = [
  [{ role: 'user', content: 'What is 2+2?' }],
  [
    { role: 'system', content: 'You answer in French.' },
    { role: 'user', content: 'Hello' },
  ],
  [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: '第一个问题' },
    { role: 'assistant', content: 'Answer one.' },
    { role: 'user', content: 'And the second?' },
  ],
  [
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello! How can I help?' },
    { role: 'user', content: 'Tell me a joke.' },
  ],
];

describe('Ollama TEMPLATE renders as the training chat template', () => {
  const names = Object.keys(BUILTIN_TEMPLATES) as BuiltinTemplateName[];
  for (const name of names) {
    it(`${name}: every conversation renders identically, and a stop ends the turn`, () => {
      const eos = '<|im_end|>';
      const { template, stop } = ollamaTemplate(name, { bos: null, addBos: false, eos });
      for (const messages of CONVERSATIONS) {
        const jinja = renderChat(messages, { template: BUILTIN_TEMPLATES[name], addGenerationPrompt: true, bosToken: null, eosToken: eos });
        assert.equal(renderOllama(template, messages), jinja, `${name}: ${JSON.stringify(messages)}`);
      }
      // What the model writes after the prompt ends with the template's end-of-turn text.
      const withAnswer = renderChat([...CONVERSATIONS[0], { role: 'assistant', content: 'ANSWER' }], {
        template: BUILTIN_TEMPLATES[name], addGenerationPrompt: false, bosToken: null, eosToken: eos,
      });
      const prompt = renderChat(CONVERSATIONS[0], { template: BUILTIN_TEMPLATES[name], addGenerationPrompt: true, bosToken: null, eosToken: eos });
      const tail = withAnswer.slice(prompt.length + withAnswer.slice(prompt.length).indexOf('ANSWER') + 'ANSWER'.length);
      assert.ok(stop.some((s) => tail.startsWith(s)), `${name}: the text after an answer (${JSON.stringify(tail)}) starts with a stop (${stop.join(', ')})`);
      assert.equal(recogniseTemplate(BUILTIN_TEMPLATES[name]), name);
    });
  }

  it('llama3 leaves <|begin_of_text|> to the tokenizer when it adds the bos token itself', () => {
    const messages = CONVERSATIONS[1];
    const jinja = renderChat(messages, { template: BUILTIN_TEMPLATES.llama3, addGenerationPrompt: true });
    const own = ollamaTemplate('llama3', { bos: '<|begin_of_text|>', addBos: true, eos: '<|eot_id|>' });
    assert.equal('<|begin_of_text|>' + renderOllama(own.template, messages), jinja);
  });

  it('the interpreter is strict enough to notice a wrong template', () => {
    const { template } = ollamaTemplate('chatml', { bos: null, addBos: false, eos: null });
    const broken = template.replace('<|im_end|>\n', '<|im_end|>');
    const jinja = renderChat(CONVERSATIONS[0], { template: BUILTIN_TEMPLATES.chatml, addGenerationPrompt: true });
    assert.notEqual(renderOllama(broken, CONVERSATIONS[0]), jinja);
  });
});

describe('export --ollama', () => {
  let tmp: string;
  let dir: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-ollama-'));
    dir = path.join(tmp, 'tiny');
    initModel({ preset: 'tiny', out: dir, seed: 1 });
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes a Modelfile beside the GGUF with the model’s own template (chatml)', () => {
    const out = path.join(tmp, 'out', 'tiny.gguf');
    const r = exportGguf({ model: dir, out, dtype: 'f16', ollama: true });
    assert.equal(r.modelfile, path.join(tmp, 'out', 'Modelfile'));
    const text = fs.readFileSync(r.modelfile!, 'utf8');
    assert.match(text, /^FROM \.\/tiny\.gguf$/m);
    assert.ok(text.includes(`TEMPLATE """${ollamaTemplate('chatml', { bos: null, addBos: false, eos: null }).template}"""`));
    assert.match(text, /^PARAMETER stop "<\|im_end\|>"$/m);
    assert.match(text, /^PARAMETER stop "<\|im_start\|>"$/m);
  });

  it('uses the template named at export (the one training used) in both the GGUF and the Modelfile', () => {
    const out = path.join(tmp, 'llama3', 'tiny.gguf');
    const r = exportGguf({ model: dir, out, dtype: 'f16', ollama: true, template: 'llama3' });
    const text = fs.readFileSync(r.modelfile!, 'utf8');
    assert.match(text, /^PARAMETER stop "<\|eot_id\|>"$/m);
    assert.ok(text.includes('<|start_header_id|>{{ .Role }}<|end_header_id|>'));
    assert.ok(fs.readFileSync(out).includes(Buffer.from(BUILTIN_TEMPLATES.llama3)), 'the GGUF carries the same template');
  });

  it('refuses a template it cannot translate, naming the way out', () => {
    assert.throws(
      () => modelfileText({ gguf: 'x.gguf', chatTemplate: '{{ messages }}', templateName: null, vocab: { tokens: [], specialIds: {}, addSpecial: {} } }),
      /--template NAME/,
    );
  });
});
