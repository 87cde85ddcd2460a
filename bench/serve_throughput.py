"""Serving throughput of `inhouse serve`: concurrent requests spread over 4 adapters vs one at a time.

    python bench/serve_throughput.py --shape tiny --out bench/results/serve_throughput_cpu.json   # CPU
    python bench/serve_throughput.py --shape 8b --out $OUT/serve_throughput_h200.json             # GPU

The server runs in a child process (this script with --child): a base model of
the chosen shape with random weights (Llama-3.1-8B: 32 layers, 4096 hidden,
GQA 32/8, 128,256-token vocabulary; or builtin:tiny), four random LoRA
adapters (r=16 on all linear layers, as the recipe's default) in a temporary
library, and the real app: the pool, the batching engine, FastAPI, uvicorn.
The parent is the client: streaming chat completions over HTTP (httpx),
each request naming one of the four adapters in turn, greedy, a fixed number
of new tokens (random weights rarely stop early; the count is read back from
usage). For each concurrency level it reports aggregate generated tokens/s,
time to first token and latency p50/p95; "one at a time" serves the same
requests sequentially. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ADAPTERS = [f"adapter-{i}" for i in range(4)]
SHAPES = {
    "small": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the server (child process) ------------------------------------------------------------------------


def word_tokenizer(vocab_size: int):
    """A tokenizer the size of Llama 3's vocabulary, built offline: words t0..tN plus ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from inhouse.model.tiny import CHATML_TEMPLATE

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    words = ["<unk>", "system", "user", "assistant"]  # every word the template and prompts use is known:
    words += [f"t{i}" for i in range(vocab_size - len(specials) - len(words))]  # no tokenizers version trips on unk
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|pad|>", eos_token="<|im_end|>", unk_token="<unk>",
                                  additional_special_tokens=specials[1:])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_base(shape: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from inhouse.model import tiny
    from inhouse.model.load import default_dtype, device

    if shape == "tiny":
        model, tok = tiny.build(seed=0)
        return model.to(device=device(), dtype=default_dtype()), tok
    tok = word_tokenizer(SHAPES[shape]["vocab_size"])
    config = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device()):
        model = LlamaForCausalLM._from_config(config, dtype=default_dtype())
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


def make_adapters(model, library: Path, base_id: str) -> None:
    """Four random LoRA adapters (B is not zero, so each changes the output), saved as library entries."""
    import torch
    from peft import LoraConfig, get_peft_model

    from inhouse import atomic

    peft = None
    for i, name in enumerate(ADAPTERS):
        torch.manual_seed(100 + i)
        config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        if peft is None:
            peft = get_peft_model(model, config, adapter_name=name)
        else:
            peft.add_adapter(name, config)
    for name in ADAPTERS:
        peft.save_pretrained(library / "tmp", selected_adapters=[name])
        folder = library / "tmp" / name if (library / "tmp" / name).is_dir() else library / "tmp"
        folder.rename(library / name)
        atomic.write_json(library / name / "inhouse.json", {"name": name, "kind": "lora", "base_model": base_id,
                                                             "finished_at": datetime.now(timezone.utc).isoformat()})
    peft.unload()


def child(args) -> None:
    import torch

    from inhouse.adapters.pool import ModelPool
    from inhouse.serve.app import create_app, start
    from inhouse.serve.config import ServeConfig
    from inhouse.serve.run import _run

    import uvicorn

    import logging

    logging.basicConfig(level=logging.WARNING)
    base_id = f"random-{args.shape}"
    model, tok = build_base(args.shape)
    make_adapters(model, Path(os.environ["INHOUSE_HOME"]) / "adapters", base_id)
    direct(ModelPool(base_id, max_adapters=4, loader=lambda m=model, t=tok: (m, t)), args)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    config = ServeConfig(model=base_id, port=args.port, max_batch=args.max_batch, batch_window_ms=args.window_ms,
                         jobs=False)
    services = start(config, loader=functools.partial(build_base, args.shape), tokenizer=tok)
    server = uvicorn.Server(uvicorn.Config(create_app(config, services), host="127.0.0.1", port=args.port,
                                           log_level="warning"))
    if torch.cuda.is_available():
        print(f"gpu: {torch.cuda.get_device_name()}", flush=True)
    asyncio.run(_run(server, config, services.catalog, lambda s: print(s, flush=True)))


def direct(pool, args) -> None:
    """The engine without HTTP: one generate call for 1 and for 32 rows over the 4 adapters (diagnostic)."""
    import torch

    from inhouse.generation import GenerationConfig
    from inhouse.model import batch

    adapters = Path(os.environ["INHOUSE_HOME"]) / "adapters"
    pool.attach({name: adapters / name for name in ADAPTERS})
    stops = {pool.tokenizer.eos_token_id}
    for rows in (1, 32):
        names = [ADAPTERS[i % 4] for i in range(rows)]
        requests = [batch.Request(pool.tokenizer(prompt(i, args.shape != "tiny", args.prompt_tokens))["input_ids"],
                                  GenerationConfig(max_new_tokens=32)) for i in range(rows)]
        for attempt in range(2):  # the first is a warm-up
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            start = time.perf_counter()
            with pool.select(names):
                done = batch.generate(pool.model, pool.tokenizer, requests, stops)
            seconds = time.perf_counter() - start
        steps = max(d.completion_tokens for d in done)
        print(f"direct: {rows} rows, {steps} steps, {1000 * seconds / steps:.1f} ms/step, "
              f"{sum(d.completion_tokens for d in done) / seconds:.1f} tokens/s", flush=True)


# --- the client (this process) ---------------------------------------------------------------------------


def prompt(i: int, vocab_words: bool, length: int) -> str:
    rng = random.Random(i)
    if vocab_words:
        return " ".join(f"t{rng.randrange(1000, 100000)}" for _ in range(length))
    return " ".join(rng.choice(["lamp", "order", "refund", "shipping", "please", "when", "my", "the"])
                    for _ in range(length // 5))


async def one(client, url: str, model: str, text: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"ttft": first if first is not None else time.perf_counter() - start,
            "latency": time.perf_counter() - start, "tokens": tokens}


async def level(url: str, concurrency: int, sequential: bool, args) -> dict:
    try:
        import httpx
    except ImportError:  # the openai SDK brings its successor, httpx2, with the same API
        import httpx2 as httpx

    words = args.shape != "tiny"
    n = args.sequential_requests if sequential else concurrency
    jobs = [(ADAPTERS[i % len(ADAPTERS)], prompt(i, words, args.prompt_tokens)) for i in range(n)]
    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=256)) as client:
        for name in ADAPTERS:  # warm-up: every adapter loaded in the generating process
            await one(client, url, name, prompt(999, words, 8), 4)
        start = time.perf_counter()
        if sequential:
            results = [await one(client, url, m, p, args.max_tokens) for m, p in jobs]
        else:
            results = await asyncio.gather(*(one(client, url, m, p, args.max_tokens) for m, p in jobs))
        wall = time.perf_counter() - start
    return summarise("one at a time" if sequential else f"{concurrency} concurrent", concurrency, results, wall)


def summarise(name: str, concurrency: int, results: list[dict], wall: float) -> dict:
    lat = sorted(r["latency"] for r in results)
    ttft = sorted(r["ttft"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {"run": name, "concurrency": concurrency, "requests": len(results), "tokens": tokens,
            "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "ttft_p50_s": round(statistics.median(ttft), 4), "ttft_p95_s": round(_p95(ttft), 4),
            "latency_p50_s": round(statistics.median(lat), 4), "latency_p95_s": round(_p95(lat), 4)}


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, max(0, round(0.95 * len(values)) - 1))]


def start_child(args, home: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, __file__, "--child", "--shape", args.shape, "--port", str(port),
           "--max-batch", str(args.max_batch), "--window-ms", str(args.window_ms)]
    proc = subprocess.Popen(cmd, env={**os.environ, "INHOUSE_HOME": home}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        print("  server:", line.rstrip(), flush=True)
        if line.startswith("serving"):
            threading.Thread(target=lambda: [print("  server:", x.rstrip(), flush=True) for x in proc.stdout],
                             daemon=True).start()  # keep draining: a full pipe would block the server
            return proc, f"http://127.0.0.1:{port}"
    raise RuntimeError("server failed:\n" + "\n".join(lines[-30:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=["tiny", *SHAPES], default="tiny")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--sequential-requests", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--window-ms", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    args.max_tokens = args.max_tokens or (128 if args.shape != "tiny" else 64)
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as home:
        proc, url = start_child(args, home)
        try:
            rows = [asyncio.run(level(url, 1, True, args))]
            for c in [int(x) for x in args.levels.split(",") if x.strip()]:
                rows.append(asyncio.run(level(url, c, False, args)))
                print(f"  {rows[-1]['run']}: {rows[-1]['tokens_per_s']} tokens/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    report(rows, args)


def report(rows: list[dict], args) -> None:
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["x_one_at_a_time"] = round(r["tokens_per_s"] / base, 2)
    print(f"\n{'run':<16}{'tokens/s':>10}{'x seq':>8}{'TTFT p50':>10}{'p95':>8}{'latency p50':>13}{'p95':>8}")
    for r in rows:
        print(f"{r['run']:<16}{r['tokens_per_s']:>10,.1f}{r['x_one_at_a_time']:>8.2f}{r['ttft_p50_s']:>10.3f}"
              f"{r['ttft_p95_s']:>8.3f}{r['latency_p50_s']:>13.3f}{r['latency_p95_s']:>8.3f}")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shape": args.shape,
              "machine": platform.node(), "python": platform.python_version(), "adapters": len(ADAPTERS),
              "max_tokens": args.max_tokens, "prompt_tokens": args.prompt_tokens, "window_ms": args.window_ms,
              "command": " ".join(sys.argv), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
