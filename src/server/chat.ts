// Chat prompts: the model's Jinja chat template (GGUF tokenizer.chat_template, or HF
// tokenizer_config.json chat_template) rendered with @huggingface/jinja, as transformers'
// apply_chat_template(messages, add_generation_prompt=True) does. Without a template (or one that
// does not parse) a documented fallback is used:
//
//   system: You are terse.
//   user: Hi
//   assistant:
//
// i.e. one "<role>: <content>" line per message, then "assistant:" for the reply.
import { Template } from '@huggingface/jinja';
import { RequestError } from './errors.js';
import type { ChatMessage } from './validate.js';

export interface ChatPrompt {
  text: string;
  /** The template writes special tokens itself (e.g. '<s>[INST]'): parse them, and add BOS only
   * when the text does not already start with it. */
  parseSpecial: boolean;
  addBos: boolean;
}

export class ChatFormatter {
  private readonly template: Template | undefined;
  /** Why the model's template is not used (for the log), when it is not. */
  readonly warning: string | undefined;

  constructor(
    source: string | undefined,
    private readonly special: { bosToken: string; eosToken: string; addBos: boolean },
  ) {
    if (source === undefined) return;
    try {
      this.template = new Template(source);
    } catch (e) {
      this.warning = `the model's chat template does not parse (${(e as Error).message}); using the plain "role: content" format`;
    }
  }

  get usesTemplate(): boolean {
    return this.template !== undefined;
  }

  render(messages: ChatMessage[]): ChatPrompt {
    if (!this.template) {
      const text = `${messages.map((m) => `${m.role}: ${m.content}\n`).join('')}assistant:`;
      return { text, parseSpecial: false, addBos: this.special.addBos };
    }
    let text: string;
    try {
      text = this.template.render({
        messages, add_generation_prompt: true, bos_token: this.special.bosToken, eos_token: this.special.eosToken,
      });
    } catch (e) {
      // mostly raise_exception() in the template: the conversation's shape (e.g. roles must alternate)
      throw new RequestError(`chat template: ${(e as Error).message}`, 400, 'invalid_request_error', 'messages');
    }
    const hasBos = this.special.bosToken !== '' && text.startsWith(this.special.bosToken);
    return { text, parseSpecial: true, addBos: this.special.addBos && !hasBos };
  }
}
