"""The run's manifest in brief: what was measured, with what, on which voices."""

from __future__ import annotations

from .load import Run, dig

# The same words as the runner's banner (biasbench/runner.py), kept here so a report does
# not import the runner and its model stack.
PIPELINE_CHECK_BANNER = ("PIPELINE CHECK: a tiny random model or a simulation answered, not a real speech "
                         "model. These numbers test the harness end to end; they measure no real model.")
PROXY_NOTE = ("The voices' demographic labels are proxies (label_source: proxy), not self-reported identities. "
              "A gap here is a gap between these voices (their accent, pitch and synthesis), not evidence "
              "about people of these groups.")
LABEL_SOURCES = {"self_reported": "self-reported by the speakers",
                 "vendor_metadata": "the voice vendor's metadata (not self-reported)",
                 "corpus_metadata": "the speech corpus's speaker metadata (see each voice's provenance for what the "
                                    "corpus recorded: an accent or first language is not an ethnicity)",
                 "proxy": "PROXIES assigned by biasbench (e.g. an accent standing in for an ethnicity)"}


def label_sources(run: Run) -> list[str]:
    sources = set(run.manifest["pool"]["label_sources"])
    if "label_source" in run.table.columns:
        sources |= set(run.table.loc[run.table["condition"] == "audio", "label_source"].dropna().astype(str))
    return sorted(sources)


def run_brief(run: Run) -> dict:
    m = run.manifest
    fingerprint = m["model"].get("fingerprint") or {}
    sources = label_sources(run)
    pipeline = bool(dig(m, "model.pipeline_check") or m.get("pipeline_check"))
    return {
        "run_id": m["run_id"], "run_dir": str(run.path), "identity_hash": m.get("identity_hash"),
        "task": m["task"]["task"], "task_description": dig(m, "task.config.description") or "",
        "output_type": m["task"]["config"]["output_type"],
        "model": m["model"]["name"], "requested": m["model"].get("requested"), "backend": m["model"]["backend"],
        "precision": fingerprint.get("dtype") or fingerprint.get("compute_type") or "not recorded",
        "quantisation": fingerprint.get("quantization") or "none",
        # a hub revision when there is one, else the weights' own checksum (packaged models)
        "revision": (fingerprint.get("revision") or _option(m, "revision")
                     or (f"sha256:{fingerprint['model_sha256'][:12]}" if fingerprint.get("model_sha256") else None)
                     or "not recorded"),
        "adapter": fingerprint.get("adapter") or "none", "device": fingerprint.get("device") or "not recorded",
        "pool": m["pool"]["pool"], "pool_voices": m["pool"].get("n_voices"), "label_sources": sources,
        "label_sources_text": [f"{s}: {LABEL_SOURCES.get(s, 'unknown source')}" for s in sources],
        "proxy_labels": "proxy" in sources,
        "data_source": dig(m, "task.source") or "not recorded", "n_items_planned": dig(m, "task.n_items"),
        "items_hash": dig(m, "task.items_hash"), "seeds": m.get("seeds") or {}, "generation": m.get("generation") or {},
        "harness_version": m["harness"]["version"], "git_commit": dig(m, "harness.git_commit"),
        "started_at": m.get("started_at"), "finished_at": m.get("finished_at"), "complete": m.get("complete"),
        "n_responses": m.get("n_responses"), "pipeline_check": pipeline,
        "pipeline_note": dig(m, "model.note") or "",
        "banners": banners(pipeline, "proxy" in sources, incomplete=m.get("complete") is not True),
    }


INCOMPLETE_BANNER = ("INCOMPLETE RUN: the manifest says this run did not answer every planned request (complete is "
                     "not true). Every number below covers only the responses stored so far; finish the run with the "
                     "same `biasbench run` command and --resume, then report again.")


def banners(pipeline_check: bool, proxy: bool, incomplete: bool = False) -> list[str]:
    flags = ((incomplete, INCOMPLETE_BANNER), (pipeline_check, PIPELINE_CHECK_BANNER), (proxy, PROXY_NOTE))
    return [text for flag, text in flags if flag]


def _option(manifest: dict, name: str):
    value = dig(manifest, f"options.{name}")
    return None if value in (None, "None", "") else value
