"""``unifybench gallery RUN_DIR``: one self-contained HTML page of a run's samples beside their scores.

For each concept: its reference photos; then for each prompt the generated images with their
CLIP-I, CLIP-T, DINO, face and judge verdicts (the judge's reply on hover); then the understanding
items with question, reply, ground truth and verdict. Everything is read from the run directory
(``predictions.jsonl``, ``scores.jsonl``, ``results.json``); the benchmark is read again only for
the reference photos and the items' images, and the page says so when it cannot be. Images are
embedded as thumbnails, so the file can be mailed or opened anywhere; every text is escaped.
"""
from __future__ import annotations

from pathlib import Path

from .errors import BenchError
from .output import write_output
from .pages import esc, page, thumbnail_uri
from .records import ANSWER_TASKS, GEN_KINDS
from .leaderboard.cells import interval_text
from .scored_run import load_scored_run
from .store import RunStore
from .tasks import caption_items


def _bench(run_json: dict):
    """The run's benchmark (for reference photos and item images), or None with why not."""
    from .data import load_benchmark

    spec = run_json.get("spec", {})
    try:
        split = spec.get("split", 0)  # MyVLM's training split: which photos are the test photos
        return load_benchmark(spec.get("bench", "mini"), spec.get("format", "auto"),
                              split=split if isinstance(split, int) else 0), None
    except BenchError as exc:
        return None, exc.one_line()


def _figure(path: Path, caption: str, tip: str = "") -> str:
    uri = thumbnail_uri(path)
    img = (f"<img src='{uri}' alt='{esc(path.name)}' loading='lazy'>" if uri
           else "<div class='bad'>unreadable image</div>")
    title = f" title='{esc(tip)}'" if tip else ""
    return f"<figure{title}>{img}<figcaption>{caption}</figcaption></figure>"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _judge_verdict(row: dict | None) -> str:
    if row is None:
        return ""
    tip = row.get("judge_reply") or ""
    if row.get("judge_first_reply"):
        tip = f"first reply: {row['judge_first_reply']}\nre-asked: {tip}"
    shown = "unparsed" if not row.get("judge_parsed") else _num(row.get("judge_score"), 1)
    return f"<span class='verdict' title='{esc(tip)}'>judge {esc(shown)}</span>"


def _image_caption(fidelity: dict | None, face: dict | None, judged: dict | None, unjudged: str = "") -> str:
    parts = []
    if fidelity:
        parts.append(f"CLIP-I {_num(fidelity.get('clip_i'))} · CLIP-T {_num(fidelity.get('clip_t'))} · "
                     f"DINO {_num(fidelity.get('dino'))}")
        if fidelity.get("copies_reference"):
            parts.append(f"<span class='bad'>a copy of a reference photo ({esc(fidelity['copies_reference'])})</span>")
    if face:
        parts.append("face " + (_num(face.get("face_sim")) if face.get("face_found") else "not found"))
    if judged:
        parts.append(_judge_verdict(judged))
    return "<br>".join(parts) or f"<span class='muted'>{esc(unjudged or 'not scored')}</span>"


def _answer_verdict(row: dict, judged: dict | None) -> str:
    parts = []
    if "correct" in row:
        ok = row["correct"]
        parts.append(f"<span class='{'ok' if ok else 'bad'}'>{'✓ correct' if ok else '✗ wrong'}</span>")
    if "parsed" in row:
        parts.append("read as " + esc(row["parsed"]) if row["parsed"] is not None else "unparsed")
    if "bleu" in row:
        parts.append(f"BLEU {_num(row['bleu'])}")
    if judged:
        parts.append(_judge_verdict(judged))
    return "<br>".join(parts)


def _clamped(text) -> str:
    """A reply shown in four lines at most; a click on it shows it whole (no script: a details element)."""
    text = esc(text)
    return f"<details class='reply'><summary><div class='clamp'>{text}</div></summary></details>" if text else ""


def _metrics_line(metrics: dict, intervals: dict | None = None) -> str:
    """A concept's numbers, each mean with its 95% interval over the concept's own items (prompts as
    the unit; Wilson for a proportion)."""
    shown = []
    for task, values in metrics.items():
        bounds = (intervals or {}).get(task, {})
        nums = [(f"{m} {interval_text(v, bounds[m]['lo'], bounds[m]['hi'])}" if m in bounds else f"{m} {v:.3f}")
                if isinstance(v, float) else f"{m} {v}" for m, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums:
            shown.append(f"<b>{esc(task)}</b> " + esc(", ".join(nums)))
    return "<p class='small'>" + " &nbsp; ".join(shown) + "</p>" if shown else ""


def build_gallery(run_dir: Path, *, concepts: list[str] | None = None, images_per_prompt: int | None = None) -> str:
    run_dir = Path(run_dir)
    scored = load_scored_run(run_dir)
    run_json, results, rows, store = scored.record, scored.results, scored.score_rows, RunStore(run_dir)
    bench, bench_problem = _bench(run_json)
    by_image: dict[tuple[str, str], dict] = {}
    by_key: dict[tuple[str, str], dict] = {}
    for r in rows:
        if "image" in r and r["scorer"] in ("fidelity", "face", "judge"):
            by_image[(r["scorer"], r["image"])] = r
        if r["scorer"] in ("answer", "judge") and "image" not in r:
            by_key[(r["scorer"], r["key"])] = r
    predictions = list(store.predictions.values())
    names = list(results.get("concepts", {})) or sorted({p.concept for p in predictions})
    if concepts:
        unknown = [c for c in concepts if c not in names]
        if unknown:
            raise BenchError(f"unknown concept(s) {', '.join(unknown)}; in this run: {', '.join(names)}",
                             where="--concepts")
        names = [c for c in names if c in concepts]

    label = results.get("label")
    head = [f"<h1>Samples of {esc(results.get('method'))} on {esc(results.get('bench', {}).get('name'))}</h1>",
            f"<p class='muted small'>run {esc(run_dir.name)} · protocol {esc(results.get('protocol'))} · "
            f"scorer backbones {esc(results.get('backbones', {}).get('kind'))} · judge "
            f"{esc((results.get('judge') or {}).get('judge') or 'none')} · seed {esc(results.get('seed'))}</p>"]
    if label:
        head.append(f"<div class='banner'>{esc(label)}</div>")
    copies = ((results.get("tasks") or {}).get("gen") or {}).get("copies")
    if isinstance(copies, int) and copies:
        head.append(f"<div class='banner'>{copies} generated image(s) are copies of a reference photo: they are "
                    f"scored against themselves (marked below)</div>")
    for note in results.get("resumed_with_changed_code") or []:
        head.append(f"<div class='banner'>resumed with changed method code ({esc(note.get('changes'))}): these "
                    f"samples come from two versions of the method</div>")
    if results.get("method_code_changed"):
        head.append(f"<div class='banner'>the method's code changed since these samples were made "
                    f"({esc(results['method_code_changed'].get('changes'))})</div>")
    if bench_problem:
        head.append(f"<div class='banner'>reference photos and item images not shown: the benchmark "
                    f"could not be read ({esc(bench_problem)})</div>")
    elif bench is not None and bench.fingerprint() != run_json["identity"].get("bench", {}).get("fingerprint"):
        # Another folder at the same path, or the same one edited: what is shown is not what was scored.
        head.append(f"<div class='banner'>the benchmark at {esc(str(bench.root))} is not the one this run was scored "
                    f"on (content {esc(bench.fingerprint()[:10])}, the run's "
                    f"{esc(str(run_json['identity'].get('bench', {}).get('fingerprint'))[:10])}): reference photos, "
                    f"questions and item images below may differ from those scored</div>")
    head.append("<p>" + " · ".join(f"<a href='#c-{esc(n)}'>{esc(n)}</a>" for n in names) + "</p>")

    sections = []
    for name in names:
        concept = None
        if bench is not None:
            try:
                concept = bench.concept(name)
            except KeyError:
                concept = None
        part = [f"<section id='c-{esc(name)}'><h2>{esc(name)}"
                + (f" <span class='muted'>{esc(concept.token)}, {esc(concept.class_noun)}</span>" if concept else "")
                + "</h2>", _metrics_line(results.get("concepts", {}).get(name, {}),
                                         (results.get("concept_intervals") or {}).get(name))]
        if concept is not None and concept.reference_images:
            part.append("<h3>reference photos</h3><div class='grid'>"
                        + "".join(_figure(p, esc(p.name)) for p in concept.reference_images) + "</div>")
        gens = sorted((p for p in predictions if p.concept == name and p.task in GEN_KINDS),
                      key=lambda p: (GEN_KINDS.index(p.task), p.index))
        if gens:
            part.append("<h3>generation</h3>")
        judged_run = bool(results.get("judge"))
        for p in gens:
            unjudged = ("not in the judge's sample" if judged_run else "no judge configured") \
                if p.task == "attr_gen" else ""
            figures = []
            for rel in (p.images or ())[:images_per_prompt]:
                caption = _image_caption(by_image.get(("fidelity", rel)), by_image.get(("face", rel)),
                                         by_image.get(("judge", rel)), unjudged)
                figures.append(_figure(run_dir / rel, caption))
            part.append(f"<div class='prompt'>{esc(p.task)} #{esc(p.index)}: {esc(p.prompt or '')}</div>"
                        f"<div class='grid'>{''.join(figures)}</div>")
        answers = sorted((r for r in rows if r["scorer"] == "answer" and r["concept"] == name),
                         key=lambda r: (ANSWER_TASKS.index(r["task"]), r["index"]))
        if answers:
            items = {it.index: it for it in bench.items.get(name, [])} if bench is not None else {}
            # A caption's index counts the concept's test photos, not its items.
            captions = {it.index: it for it in caption_items(bench, name)} if bench is not None else {}
            lines = ["<h3>understanding</h3><div class='scroll'><table><thead><tr><th class='text'>task</th>"
                     "<th class='text'>image</th><th class='text'>question</th><th class='text'>reply</th>"
                     "<th class='text'>ground truth</th><th class='text'>verdict</th></tr></thead><tbody>"]
            for r in answers:
                item = (captions if r["task"] == "caption" else items).get(r["index"])
                photo = item.image if item is not None and r["task"] != "text_only" else None
                image = ""
                if photo is not None:
                    uri = thumbnail_uri(photo, side=64)
                    image = f"<img src='{uri}' alt='' style='width:64px;height:64px;object-fit:cover'>" if uri else ""
                lines.append(f"<tr><td class='text'>{esc(r['task'])} #{esc(r['index'])}</td><td class='text'>{image}</td>"
                             f"<td class='text'>{esc(r.get('question'))}</td><td class='text'>{_clamped(r.get('reply'))}</td>"
                             f"<td class='text'>{esc(r.get('truth'))}</td>"
                             f"<td class='text'>{_answer_verdict(r, by_key.get(('judge', r['key'])))}</td></tr>")
            lines.append("</tbody></table></div>")
            part.append("".join(lines))
        part.append("</section>")
        sections.append("\n".join(part))
    return page(f"UnifyBench samples: {results.get('method')}", "\n".join(head + sections))


def write_gallery(run_dir: Path, out: Path | None = None, **kwargs) -> Path:
    text = build_gallery(run_dir, **kwargs)
    out = Path(out) if out else Path(run_dir) / "gallery.html"
    write_output(out, text)
    return out
