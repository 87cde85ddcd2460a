"""Interactive chat with an adapter: history kept, answers streamed as they come."""

from __future__ import annotations

from inhouse.generation import GenerationConfig
from inhouse.adapters.load import load_chat_model


def interactive(ref: str, config: GenerationConfig) -> None:
    chat = load_chat_model(ref)
    history: list[dict[str, str]] = []
    print(f"chatting with {chat.name} (/reset clears the history, /exit or Ctrl-D quits)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = []
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        answer = chat.reply(history, config, on_text=lambda piece: print(piece, end="", flush=True))
        print()
        history.append({"role": "assistant", "content": answer})
