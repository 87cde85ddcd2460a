"""Options of `inhouse data prepare`, kept free of heavy imports: the CLI builds its flags from them
before anything else is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inhouse.data.pii_allow import check_allow
from inhouse.errors import InhouseError
from inhouse.recipe import MAX_SEQ_LENGTH

if TYPE_CHECKING:
    from inhouse.data.formats import ColumnMap

MAX_UPSAMPLE = 1_000_000  # examples per category: more is a typo, and would fill memory before failing
PII_KINDS: tuple[str, ...] = ("URL_CREDENTIALS", "SECRET", "EMAIL", "CARD", "IBAN", "SSN", "IP", "PHONE")


class ColumnConfig(BaseModel):
    """Which columns of a CSV/TSV/Parquet file hold an example's parts: the same flags for `data check`,
    `data scan` and `data prepare`, so a table with any column names can be checked before it is prepared."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt_column: str | None = Field(None, description="CSV/Parquet: column with the user's message or instruction.")
    response_column: str | None = Field(None, description="CSV/Parquet: column with the answer.")
    input_column: str | None = Field(None, description="CSV/Parquet: optional extra input appended to the prompt.")
    system_column: str | None = Field(None, description="CSV/Parquet: optional system message column.")
    category_column: str | None = Field(None, description="CSV/Parquet: column copied to each example's category.")

    def columns(self) -> ColumnMap | None:
        from inhouse.data.formats import ColumnMap

        if not (self.prompt_column or self.response_column):
            return None
        if not (self.prompt_column and self.response_column):
            raise InhouseError("give both --prompt-column and --response-column (or neither)")
        return ColumnMap(prompt=self.prompt_column, response=self.response_column, input=self.input_column,
                         system=self.system_column, category=self.category_column)


class PrepareConfig(ColumnConfig):
    """Options of the preparation step; each is a YAML key and a `data prepare` flag."""

    normalize: bool = Field(True, description="Unicode NFC, control characters, whitespace and line endings.")
    dedup: bool = Field(True, description="Remove exact and near duplicates, keeping the first occurrence.")
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1, description="Jaccard similarity (character 5-grams) above which examples are near duplicates.")
    conflicts: Literal["keep", "first", "drop"] = Field("keep", description="Examples asking the same (or a near-identical) question with different answers: keep them all and report them, keep the first, or drop them all.")
    pii: Literal["redact", "drop", "off"] = Field("redact", description="Replace PII with typed placeholders, drop examples with PII, or leave it.")
    pii_kinds: list[str] = Field(list(PII_KINDS), description="PII kinds to act on.")
    pii_allow: list[str] = Field([], description="Values that stay (your own public contact details): an exact value, "
                                 "@example.com or @*.example.com for e-mail domains, re:PATTERN; see docs/pii.md.")
    max_seq_length: int | None = Field(None, ge=8, le=MAX_SEQ_LENGTH, description="Longest example in tokens of --model's tokenizer (off when unset).")
    model: str = Field("builtin:tiny", description="Model whose tokenizer and chat template measure lengths.")
    too_long: Literal["drop", "truncate"] = Field("drop", description="Over max_seq_length: drop the example, or drop trailing turns until it fits.")
    schema_file: Path | None = Field(None, description="JSON Schema that assistant messages must satisfy.",
                                     json_schema_extra={"flag": "schema"})
    rules: list[dict[str, Any]] = Field([], description="Declarative structured-output rules (YAML only; see inhouse.data.schema).")
    json_messages: Literal["all", "last", "fenced"] = Field("all", description="Which assistant messages must be JSON.")
    keep_invalid: bool = Field(False, description="Keep examples that fail the schema or rules (they are still reported).")
    validation: float = Field(0.1, ge=0, lt=1, description="Share held out for validation.")
    test: float = Field(0.0, ge=0, lt=1, description="Share held out for testing.")
    stratify: str | None = Field(None, description="Category field to stratify the split by (e.g. category).")
    cap_per_category: int | None = Field(None, ge=1, le=10**9, description="Training split: at most this many examples per category.")
    upsample_to: int | None = Field(None, ge=1, le=MAX_UPSAMPLE, description="Training split: repeat examples of smaller categories up to this count.")
    seed: int = Field(42, description="Seed for the split and balancing.")

    @field_validator("pii_allow")
    @classmethod
    def _allow_entries(cls, value: list[str]) -> list[str]:
        """A bad entry fails when the options are read, before any data is."""
        return check_allow(value)
