"""Options of `inhouse serve`; each is a flag (and could be a YAML key)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeConfig(BaseModel):
    """Where the server listens, what it serves, and its limits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field("builtin:tiny", description="Base model: a local Hugging Face folder, a hub id, or builtin:tiny; its adapters in the library are served too.")
    served_model_name: str | None = Field(None, description="The id clients use for the base model (default: --model as given).")
    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback needs an API key.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port, printed at start).")
    api_key: str | None = Field(None, description="Bearer token clients must send (default: the INHOUSE_API_KEY environment variable).")
    max_adapters: int = Field(8, ge=1, le=256, description="Adapters kept loaded at once; the least recently used leaves first.")
    max_batch: int = Field(64, ge=1, le=1024, description="Most requests generated together in one batch.")
    batch_window_ms: float = Field(10.0, ge=0, le=1000, description="How long the first request of a batch waits for others to join it.")
    max_body_mb: float = Field(8.0, gt=0, le=1024, description="Largest request body accepted (JSON endpoints).")
    max_file_mb: float = Field(512.0, gt=0, le=65536, description="Largest file accepted by POST /v1/files.")
    jobs: bool = Field(True, description="Run queued fine-tuning jobs (one per GPU, or one on the CPU).")
    allow_model_paths: bool | None = Field(None, description="Let fine-tuning jobs name a model folder on this machine by its absolute path (default: on when bound to loopback with no API key, where every client is this machine's user; off otherwise).")
    cors_origin: list[str] | None = Field(None, description="Origins allowed to call the API from a browser (CORS off when unset), comma-separated.")
    default_max_tokens: int = Field(4096, ge=1, le=32768, description="Answer length when a request sets no max_tokens (never past the context).")
    kb_store: str | None = Field(None, description="Where a knowledge base created by uploading documents to the server keeps its chunks: a postgresql://USER@HOST/DB connection string without password (PGPASSWORD or ~/.pgpass supply it), or env:VARIABLE naming an environment variable that holds one (default: embedded LanceDB). Existing knowledge bases keep their own.")

    @field_validator("kb_store")
    @classmethod
    def _known_store(cls, value: str | None) -> str | None:
        """Checked at start (a password in the URL is refused here too), not at the first upload."""
        if value is None or value == "lancedb":
            return None
        from inhouse.errors import InhouseError
        from inhouse.rag import pgconn

        if not pgconn.is_store_spec(value):
            raise ValueError("give lancedb (the default), a postgresql:// connection string or env:VARIABLE")
        try:
            pgconn.location(value, "check")
        except InhouseError as e:
            raise ValueError(str(e).removeprefix("--store: ").replace("--store env:", "env:")) from None
        return value
