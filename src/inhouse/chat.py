"""Interactive chat with an adapter: history kept, answers streamed as they come."""

from __future__ import annotations

from transformers import TextStreamer

from inhouse.model.generate import load_chat_model


def interactive(ref: str, system: str | None, max_new_tokens: int, temperature: float) -> None:
    chat = load_chat_model(ref)
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    print(f"chatting with {chat.name} (/reset clears the history, /exit or Ctrl-D quits)")
    streamer = TextStreamer(chat.tokenizer, skip_prompt=True, skip_special_tokens=True)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = list(start)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        answer = chat.reply(history, max_new_tokens=max_new_tokens, temperature=temperature, streamer=streamer)
        history.append({"role": "assistant", "content": answer})
