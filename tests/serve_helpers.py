"""A real `inhouse serve` process on a free loopback port, and the data its tests train on."""

import os
import signal
import socket
import subprocess
import sys
import time

import urllib.error
import urllib.request

FACTS = [("Favourite colour?", "Blue."), ("Meaning of life?", "Forty-two."),
         ("Best day?", "Tuesday."), ("Capital of Portugal?", "Lisbon.")]
POLITE = [("Favourite colour?", "Kindly: blue."), ("Best day?", "Kindly: Tuesday."),
          ("Meaning of life?", "Kindly: forty-two."), ("Capital of Portugal?", "Kindly: Lisbon.")]
DOCS = {
    "returns.md": "# Returns\n\nLamps can be returned within 30 days of delivery. Refunds take five working days.\n",
    "shipping.md": "# Shipping\n\nOrders ship from our Leeds workshop within two days of payment.\n",
}


def check_shop_vector_store(client, store="shop") -> None:
    """The knowledge base of DOCS as OpenAI's vector store API shows it, whichever backend holds it."""
    stores = [s for s in client.vector_stores.list() if s.id == store]
    assert stores and stores[0].file_counts.completed == len(DOCS)
    results = list(client.vector_stores.search(store, query="how long do refunds take", max_num_results=2))
    assert results[0].filename == "returns.md" and "Refunds take five working days" in results[0].content[0].text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`inhouse serve` in a subprocess; stopped with SIGTERM like a service manager would."""

    def __init__(self, home, model, *flags):
        self.port, self.home = free_port(), home
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "INHOUSE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "inhouse", "serve", "--model", str(model), "--port",
                                      str(self.port), *map(str, flags)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.wait_ready()

    def wait_ready(self, limit: float = 300) -> None:
        deadline = time.monotonic() + limit  # generous: CI machines are shared; readiness, not speed, is tested
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def client(self, **kw):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0,
                      _strict_response_validation=True, **kw)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, out


