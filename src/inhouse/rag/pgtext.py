"""Full-text (BM25) search for the PostgreSQL store: an inverted index kept in an ordinary table.

Why not the GIN index alone: GIN finds the chunks that contain a word, but BM25 needs each match's
term frequency and length, so every matching chunk's tsvector had to be read and ranked per row
(`legacy_bm25_sql`, 0.7 s a query at 100,000 chunks). Stock PostgreSQL has no BM25 index, so the
store keeps one itself: `kb_<name>__post` holds one row per (lexeme, chunk): the term frequency and
the chunk's length, clustered by lexeme under a primary key that carries both (an index-only scan
reads a word's postings in order). A query is then one GROUP BY over the postings of its lexemes.

The postings are derived from the chunk's stored `to_tsvector('english', text)` (its lexemes and
their positions: tf = the number of positions) and written in the commit's transaction, so they are
never out of step with the chunks readers see. Document frequency is counted from the postings at
query time, in the same statement as the scores, so it needs no upkeep.
"""

from __future__ import annotations

from typing import Any

K1, B = 1.2, 0.75
FULL_TEXT = "postings"  # meta["full_text"] of a knowledge base whose postings table is published


def _sql() -> Any:
    from psycopg import sql

    return sql


def postings_table(post: Any) -> Any:
    """The postings table, without its key: rows go in first, sorted by lexeme, then the key is built."""
    return _sql().SQL("CREATE TABLE {} (lexeme text NOT NULL, rid bigint NOT NULL, tf int NOT NULL, "
                      "len int NOT NULL)").format(post)


def postings_key(post: Any, name: Any) -> Any:
    return _sql().SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (lexeme, rid) INCLUDE (tf, len)").format(post, name)


def add_postings(post: Any, rows: Any) -> Any:
    """INSERT the postings of `rows` (an SQL source with rid, tsv and doc_len), sorted by lexeme so a
    bulk load lies on disk in the order queries read it."""
    return _sql().SQL("INSERT INTO {post} (lexeme, rid, tf, len) SELECT u.lexeme, r.rid, cardinality(u.positions), "
                      "r.doc_len FROM {rows} r, unnest(r.tsv) u ORDER BY 1, 2").format(post=post, rows=rows)


def drop_postings(post: Any, gone: Any) -> Any:
    """DELETE the postings of `gone` (an SQL source with rid and tsv), each through the primary key."""
    return _sql().SQL("DELETE FROM {post} p USING (SELECT r.rid, u.lexeme FROM {gone} r, unnest(r.tsv) u) g "
                      "WHERE p.lexeme = g.lexeme AND p.rid = g.rid").format(post=post, gone=gone)


def _idf(df: str) -> Any:
    """idf = ln(1 + (N - df + 0.5) / (df + 0.5)), as Lucene and LanceDB."""
    return _sql().SQL("ln(1 + (kb.n - {df} + 0.5) / ({df} + 0.5))").format(df=_sql().SQL(df))


def _formula(p: str, idf: Any) -> Any:
    """BM25's per-posting term: idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)), in float8."""
    sql = _sql()
    return sql.SQL("{idf} * {p}.tf * {k1p} / ({p}.tf + {k1} * (1 - {b} + {b} * {p}.len::float8 / kb.avgdl))").format(
        idf=idf, p=sql.Identifier(p), k1p=sql.SQL(f"{K1 + 1}::float8"), k1=sql.SQL(f"{K1}::float8"),
        b=sql.SQL(f"{B}::float8"))


def bm25_sql(kbs: Any, table: Any, post: Any, cols: Any, cond: Any, filtered: bool) -> Any:
    """Top-k by BM25 over the postings; parameters: the knowledge base's name, the query, k (unfiltered),
    the filter's values, k. One statement, so N, the mean length, df and the postings come from one
    snapshot. df is counted per query word on the key alone (an index-only count), over every chunk
    holding the word, before the filter (as the GIN version did); then one pass over the words'
    postings sums the scores per chunk. Without a filter the k best are picked (ties at the k-th place
    by row id, so a bounded top-k sort suffices) before the chunks are joined, so only those rows are
    read; with one, every scored chunk is joined and filtered first."""
    sql = _sql()
    best = sql.SQL("scored") if filtered else sql.SQL("(SELECT * FROM scored ORDER BY score DESC, id LIMIT %s)")
    return sql.SQL("""
WITH kb AS (SELECT (meta->>'chunks')::float8 AS n, greatest((meta->>'avg_len')::float8, 1) AS avgdl
            FROM {kbs} WHERE name = %s),
terms AS (SELECT DISTINCT u.lexeme FROM unnest(to_tsvector('english', %s)) u),
w AS MATERIALIZED (SELECT t.lexeme, {idf} AS idf FROM terms t CROSS JOIN kb CROSS JOIN LATERAL
                   (SELECT count(*)::float8 AS df FROM {post} p WHERE p.lexeme = t.lexeme) d),
scored AS (SELECT p.rid AS id, sum({formula}) AS score FROM w JOIN {post} p USING (lexeme) CROSS JOIN kb
           GROUP BY p.rid)
SELECT {cols}, s.score FROM {best} s JOIN {t} c ON c.rid = s.id WHERE {cond}
ORDER BY s.score DESC, c.chunk_id LIMIT %s
""").format(kbs=kbs, t=table, post=post, cols=cols, cond=cond, best=best, idf=_idf("d.df"),
            formula=_formula("p", _sql().SQL("w.idf")))


def bm25_params(name: str, query: str, where_params: list, k: int, filtered: bool) -> list:
    return [name, query, *([] if filtered else [k]), *where_params, k]


def legacy_bm25_sql(kbs: Any, table: Any, cols: Any, cond: Any) -> Any:
    """The earlier BM25, for a knowledge base published before the postings existed (until its next
    write builds them): each term looked up in the GIN index, df counted over its matches before the
    filter, its frequency in a chunk from ts_rank_cd of that one term with unit weights and no
    normalisation. Parameters: name, query, the filter's values, k."""
    sql = _sql()
    return sql.SQL("""
WITH kb AS (SELECT (meta->>'chunks')::float8 AS n, greatest((meta->>'avg_len')::float8, 1) AS avgdl
            FROM {kbs} WHERE name = %s),
terms AS (SELECT DISTINCT u.lexeme, quote_literal(u.lexeme)::tsquery AS q FROM unnest(to_tsvector('english', %s)) u),
matches AS (SELECT c.chunk_id, c.doc_len AS len, ts_rank_cd('{{1,1,1,1}}', c.tsv, t.q, 0) AS tf, {cond} AS keep,
                   count(*) OVER (PARTITION BY t.lexeme)::float8 AS df
            FROM terms t JOIN {t} c ON c.tsv @@ t.q),
scored AS (SELECT m.chunk_id, sum({formula}) AS score FROM matches m CROSS JOIN kb WHERE m.keep GROUP BY m.chunk_id)
SELECT {cols}, s.score FROM scored s JOIN {t} c USING (chunk_id) ORDER BY s.score DESC, chunk_id LIMIT %s
""").format(kbs=kbs, t=table, cond=cond, cols=cols, formula=_formula("m", _idf("m.df")))
