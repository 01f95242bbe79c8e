"""Rubric-ARM on a real pretrained model: SmolLM2-135M-Instruct on the implicit toy task. What can it reach
before any RL? Every step runs the project's own scripts (one heavy process at a time), keeps its output in
the run folder (a rerun resumes) and refuses a folder made with other settings.

The task (tasks/toy_task.py make_implicit_split) as it is: each request states a required word and *implies*
a letter-case rule through its medium ("as a newspaper headline": a capital first letter; "for a minimalist
poster": lowercase); every held-out pair is decided by the implied rule alone, so a judge sees it only through
a rubric that names it. Training rubrics (SFT) name the rule a third of the time, when it decides the pair.

  1. data      the implicit splits of the default demo (SFT 320, RL 1024, held-out 200 with prompts no
               training split holds); the trivial judges of the held-out pairs
  2. SFT       sft_warmup.py of both roles on the SFT split (LoRA r16 on every linear layer, fp32)
  3. reading   evaluate.py --rubric-sensitivity of the SFT judge on the held-out pairs, both orders, greedy:
               under its generator's rubric, the reference rubric, another prompt's, an empty one
  4. naming    how often a generator's rubric names the implied rule (and how often the opposite one), on the
               held-out prompts: greedy and sampled at the rollout temperature, for the base and the SFT
               generator: what the rubric phase can sharpen
  5. probe     experiments/judge_reach.py on the same held-out pairs (train: RL pairs, reference rubrics):
               can the frozen features at the verdict position tell the winner at all?

    python experiments/smol_implicit.py --out runs/smol_implicit                # about 80 min on 2 cores
    python experiments/smol_implicit.py --out runs/smol_implicit --publish      # + docs/results/smol_implicit_reach.json
    python experiments/smol_implicit.py --out runs/smol_implicit --ablation --seeds 0 1 --publish   # + the schedules:
        # alternating (judge-first) vs judge phases only vs rubric phases only, one cycle (two phases of --rl-steps 20)
        # each from the same SFT, held-out accuracy after every phase: about 130 s a rubric-phase step and 17.5 minutes
        # an evaluation on 2 cores, some 7.6 hours a seed; every finished step and evaluation is kept
    python experiments/smol_implicit.py --out runs/smol_implicit --ablation --judge-recipe runs/smol_recipes/tallied \
        --schedules rubric-only judge-first judge-only --seeds 0 1    # the same from the tallied SFT judge
    # ... --status [--publish]: the same flags, nothing run: what has finished so far (safe beside the running study)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import toy_rubric_phase as R  # noqa: E402

import common as C  # noqa: E402
import toy_task  # noqa: E402
from driver import check_config, generator_rubrics, pct, rel, sh  # noqa: E402

# ---- configuration: everything the results depend on ---------------------------------------------
MODEL = "smollm2-135m"
DTYPE = "fp32"                  # the CPU here has no fast bf16
SPLITS = {k: v for k, v in toy_task.IMPLICIT_SPLITS.items() if k != "pretrain"}  # rows, seed, annotated, held out
N_EVAL = 100                    # held-out pairs judged (each in both orders)
N_PROBE_TRAIN = 256             # RL pairs the linear probe is fit on (both orders)
JUDGE_TEMPLATE = "experiments/compact_judge_template.txt"  # the same trajectory, a prompt 2.3x shorter
SFT_ARGS = ["--dtype", DTYPE, "--epochs", "1", "--batch-size", "8", "--micro-batch", "4", "--lr", "1e-3",
            "--cutoff-len", "1024", "--save-every", "5", "--lora-r", "16", "--lora-alpha", "32"]
EVAL_ARGS = ["--dtype", DTYPE, "--greedy", "--swap", "--max-rubric-tokens", "96", "--max-judge-tokens", "256",
             "--batch-size", "25", "--limit", str(N_EVAL)]
NAMING = {"samples": 4, "temperature": 1.0, "max_new_tokens": 96}  # the rubric phase's rollout temperature
PROBE_ARGS = ["--n-train", str(N_PROBE_TRAIN), "--n-eval", str(N_EVAL), "--steps", "0", "--dtype", DTYPE,
              "--probe-layers", "8", "16", "24", "30"]
# The ablation (--ablation): one cycle of each schedule from the SFT adapters, per training seed, phases sized to
# the CPU (about 130 s a rubric-phase step on 2 cores: --rl-steps 20 makes a phase about 45 minutes)
SCHEDULES = ("judge-first", "judge-only", "rubric-only")
PHASES = {"judge-first": ("c1_judge", "c1_rubric"), "judge-only": ("c1_judge", "c1_judge_b"),  # alternate.sh's
          "rubric-only": ("c1_rubric_a", "c1_rubric")}                                      # folders, one cycle
RL_STEPS = 20
RL_LR = 1e-4        # both roles. The toy recipe's 5e-4 (experiments/toy_ablation.py) was tried first: the rubric
                    # phase's rubrics broke within 5 steps ("The response must be. [Hard Rule]";
                    # docs/results/smol_rubric_phase_lr5e-4), most groups' rewards being the judge's noise
JUDGE_TOKENS = 256  # the judge's trajectory budget: GRPO completions, the rubric phase's judge calls, evaluation


def stage_args(judge_tokens: int = JUDGE_TOKENS) -> dict:
    """alternate.sh's stage flags for a judge whose trajectories take up to judge_tokens tokens (--max-steps comes
    from --rl-steps)."""
    return {
        "MODEL_ARGS": f"--dtype {DTYPE} --lora-r 16 --lora-alpha 32 --judge-template {JUDGE_TEMPLATE}",
        "CACHE_ARGS": "--max-new-tokens 96 --batch-size 25",
        "JUDGE_ARGS": f"--group-size 4 --batch-size 16 --micro-batch 8 --max-completion-length {judge_tokens} "
                      f"--max-prompt-length 1024 --lr {RL_LR}",
        "RUBRIC_ARGS": f"--group-size 4 --batch-size 16 --micro-batch 8 --max-completion-length 96 --judge-max-new-tokens "
                       f"{judge_tokens} --judge-batch 16 --max-prompt-length 1024 --lr {RL_LR}",
    }


STAGE_ARGS = stage_args()
# every evaluation's decoding, as the reach step's (the SFT judge's numbers are reused)
JUDGE_EVAL = ["--dtype", DTYPE, "--judge-template", JUDGE_TEMPLATE, *EVAL_ARGS]

# A rubric names a case rule when it mentions it in any wording the generator may use ("no capital letters"
# is the lowercase rule, so it is taken out before looking for the capital one)
LOWER_WORDS = re.compile(r"lower[\s-]?case|small letters|(?:no|without|never use) capital(?:s| letters?)?|"
                         r"(?:not|n't|never)\s+(?:start|begin)s?\s+with\s+an?\s+(?:capital|upper[\s-]?case)(?: letter)?", re.I)
CAPITAL_WORDS = re.compile(r"capital|upper[\s-]?case", re.I)


def config() -> dict:
    return {"model": MODEL, "dtype": DTYPE, "splits": SPLITS, "n_eval": N_EVAL, "n_probe_train": N_PROBE_TRAIN,
            "judge_template": JUDGE_TEMPLATE, "sft_args": SFT_ARGS, "eval_args": EVAL_ARGS, "naming": NAMING,
            "probe_args": PROBE_ARGS, "task_fingerprint": toy_task.implicit_fingerprint()}


def sft(data: Path, out: Path, seed: int) -> tuple[Path, Path]:
    for role in ("rubric", "judge"):
        if not (out / f"sft_{role}" / "adapter").exists():
            sh([sys.executable, "sft_warmup.py", "--role", role, "--model", MODEL, "--data", data, "--seed", seed,
                "--judge-template", JUDGE_TEMPLATE, "--out", out / f"sft_{role}", "--resume", *SFT_ARGS],
               out / "logs" / f"sft_{role}.log")
    return out / "sft_rubric" / "adapter", out / "sft_judge" / "adapter"


def sensitivity(rubric: Path | None, judge: Path | None, data: Path, out: Path, extra: tuple = ()) -> dict:
    """evaluate.py --rubric-sensitivity: the judge on the held-out pairs under each rubric (extra: flags after
    EVAL_ARGS, which they override; evaluate.py's run signature refuses a folder made with others)."""
    if not (out / "sensitivity.json").exists():
        roles = (["--rubric-adapter", rubric] if rubric else []) + (["--judge-adapter", judge] if judge else [])
        sh([sys.executable, "evaluate.py", "--model", MODEL, *roles, "--judge-template", JUDGE_TEMPLATE,
            "--benchmark", "pairwise", "--data", data, "--reference-rubrics", data, "--rubric-sensitivity",
            "--out", out, *EVAL_ARGS, *extra], out.parent / "logs" / f"{out.name}.log")
    rep = json.loads((out / "sensitivity.json").read_text())
    for row in rep["rows"]:  # position: each fixed order's accuracy (Table 13's Fixed Ord-1 / Ord-2)
        s = json.loads((out / row["name"] / "results.json").read_text())["summary"]
        row["accuracy_fixed1"], row["accuracy_fixed2"] = s.get("accuracy_fixed1"), s.get("accuracy_fixed2")
        row["format_rate"] = s.get("format_rate")
    return rep


def names(rubric: str, kind: str) -> str:
    """'right' if the rubric names the implied rule (kind), 'wrong' if it names only the opposite one, else 'none'."""
    said = {"lowercase": bool(LOWER_WORDS.search(rubric)), "capital_start": bool(CAPITAL_WORDS.search(LOWER_WORDS.sub("", rubric)))}
    other = "lowercase" if kind == "capital_start" else "capital_start"
    return "right" if said[kind] else "wrong" if said[other] else "none"


def naming_rates(adapter: Path | None, rows: list[dict], out: Path) -> dict:
    """The generator's rubrics for the held-out prompts, greedy and NAMING['samples'] sampled at the rollout
    temperature, each classified by names(); kept in out (a rerun reads them back)."""
    def load():
        model = C.load_base_model(MODEL, dtype=DTYPE)
        return C.load_tokenizer(MODEL), (C.attach_lora(model, str(adapter), trainable=False) if adapter else model).eval()
    recs = generator_rubrics(load, rows, out / "rubrics.jsonl", 25, NAMING, fields=("implied", "cue"))
    rep = {}
    for mode in ("greedy", "sampled"):
        verdicts = [names(t, r["implied"]) for r in recs for t in ([r[mode]] if mode == "greedy" else r[mode])]
        rep[mode] = {v: verdicts.count(v) / len(verdicts) for v in ("right", "wrong", "none")}
        named = [v for v in verdicts if v != "none"]
        rep[mode]["right_when_named"] = named.count("right") / len(named) if named else None
        rep[mode]["n"] = len(verdicts)
    rep["example"] = recs[0]["greedy"]
    return rep


def logged_naming(phase: Path, implied: dict[str, str], parts: int = 4) -> list[dict]:
    """What a rubric phase's logged rubrics (judge_samples.jsonl) name, by consecutive blocks of its steps: the
    share naming the implied rule, the opposite one or neither, and the judge's reward under each."""
    logged = C.read_jsonl_resumable(phase / "judge_samples.jsonl")
    if not logged:
        return []
    last = max(r["step"] for r in logged)
    size = max(1, -(-last // parts))
    out = []
    for lo in range(1, last + 1, size):
        block = [(names(r["rubric"], implied[r["id"]]), r["reward_acc"]) for r in logged if lo <= r["step"] < lo + size]
        row: dict = {"steps": [lo, min(lo + size - 1, last)], "n": len(block)}
        for v in ("right", "wrong", "none"):
            got = [acc for what, acc in block if what == v]
            row[v] = len(got) / len(block) if block else None
            row[f"reward_{v}"] = sum(got) / len(got) if got else None
        out.append(row)
    return out


def probe(data: dict[str, Path], out: Path) -> dict:
    path = out / "judge_reach.json"
    if not path.exists():
        sh([sys.executable, "experiments/judge_reach.py", "--model", MODEL, "--train", data["rl"], "--eval", data["eval"],
            "--judge-template", JUDGE_TEMPLATE, *PROBE_ARGS, "--out", path], out / "logs" / "probe.log")
    return json.loads(path.read_text())


def trivial_judges(paths: dict[str, Path], n_eval: int, out: Path) -> dict:
    """toy_rubric_phase's trivial judges (classifier fit on SFT) on the judged held-out pairs: the first n_eval."""
    held = out / "data" / f"eval_first{n_eval}.jsonl"
    if not held.exists():
        C.write_jsonl_atomic(held, C.read_jsonl_resumable(paths["eval"])[:n_eval])
    return R.trivial_judges({"sft": paths["sft"], "eval": held})


def run_schedule(rl: Path, init: tuple[Path, Path], out: Path, schedule: str, seed: int, steps: int,
                 stage: dict) -> None:
    """alternate.sh, one cycle of `schedule`, from the SFT adapters (it resumes a stopped run from its markers)."""
    limit = f" --max-steps {steps} --save-every {max(1, steps // 4)}"
    env = {**stage, "JUDGE_ARGS": stage["JUDGE_ARGS"] + limit, "RUBRIC_ARGS": stage["RUBRIC_ARGS"] + limit,
           "RUBRIC_ARM_PYTHON": sys.executable}
    sh(["bash", "alternate.sh", "--model", MODEL, "--data", rl, "--rubric-init", init[0], "--judge-init", init[1],
        "--cycles", 1, "--order", schedule, "--seed", seed, "--out", out], out.parent / "logs" / f"{out.name}.log", env=env)


def after_phases(run: Path, schedule: str, init: tuple[Path, Path]) -> list[tuple[str, Path, Path]]:
    """(phase, generator, judge) after each phase of one cycle of `schedule` (a frozen role keeps its SFT adapter)."""
    rubric, judge, out = *init, []
    for name in PHASES[schedule]:
        if "rubric" in name:
            rubric = run / name / "adapter"
        else:
            judge = run / name / "adapter"
        out.append((name, rubric, judge))
    return out


def phase_costs(run: Path) -> list[dict]:
    """Each GRPO phase's median step time and where it went (generation / reward, log-probs, forward+backward): the
    median, because a step that spans a pause of the run (kill -STOP to free the CPU) counts the pause."""
    import statistics
    rows = []
    for p in C.grpo_phases(run):
        log = [r for r in C.read_jsonl_resumable(p / "metrics.jsonl") if "time_step" in r]
        if log:
            rows.append({"phase": p.name, "steps": len(log), **{k: statistics.median(r.get(k, 0.0) for r in log) for k in
                         ("time_step", "time_gen", "time_reward", "time_logprob", "time_fwd_bwd", "time_optimizer")}})
    return rows


def ablation(paths: dict[str, Path], init: tuple[Path, Path], out: Path, seeds: list[int], steps: int,
             schedules: list[str], sft_sens: Path, judge_tokens: int, run: bool = True) -> dict:
    """Alternating vs one role only, from one SFT, per training seed: held-out accuracy with the generator's
    rubrics after every phase, the final judges under the reference rubric (and judge-first's under another
    prompt's), the generator's naming rates after its phases, each phase's signal and cost. sft_sens: the SFT
    judge's evaluate.py --rubric-sensitivity folder (its numbers are the SFT rows). A summary is written after
    every schedule, so a run stopped part way still shows what it measured. run=False (--status) runs nothing:
    it reads back every phase, evaluation and naming measurement that has finished, into status.json."""
    import manifests as M
    import toy_ablation as T
    out.mkdir(parents=True, exist_ok=True)
    stage, judge_eval = stage_args(judge_tokens), [*JUDGE_EVAL, "--max-judge-tokens", str(judge_tokens)]
    check_config(out, {"stage_args": stage, "judge_eval": judge_eval, "rl_steps": steps, "sft": [str(i) for i in init],
                       "sft_digests": [M.content_digest(i / "adapter_model.safetensors") for i in init]})
    given = R.sensitivity_files(paths["eval"], out)
    rows = C.read_jsonl_resumable(paths["eval"])[:N_EVAL]
    results: dict[str, list[dict]] = {}
    signal: dict[str, list[list[dict]]] = {}
    costs: dict[str, list[list[dict]]] = {}
    naming: dict[str, list[dict]] = {}
    logged: dict[str, list[dict]] = {}  # per schedule and phase, per seed: what the phase's logged rubrics name
    implied = {r["id"]: r["implied"][0] for r in C.read_jsonl_resumable(paths["rl"])}

    def ev(name: str, rubric, judge, folder: Path, extra: tuple = ()) -> None:
        if not run and not (folder / "results.json").exists():
            return
        results.setdefault(name, []).append(T.evaluate(MODEL, rubric, judge, paths["eval"], folder, extra=extra,
                                                       eval_args=judge_eval))
        C.log.info("%s: %.1f%%", name, 100 * results[name][-1]["both"])

    def save() -> dict:
        summ = {**R.summarize(results, signal, {}), "costs": costs, "naming": naming, "logged_naming": logged}
        C.atomic_write_text(out / ("summary.json" if run else "status.json"), json.dumps(summ, indent=2))
        return summ

    # the SFT rows: the SFT judge's sensitivity run, once (greedy and shared by every seed: counted per seed, its
    # interval would shrink as if the seeds were new draws; summarize pairs it with each seed's runs)
    ev("SFT", *init, sft_sens / "generator")
    for what in ("reference", "other prompt's"):
        ev(f"SFT, {what} rubric", None, init[1], sft_sens / ("own" if what == "reference" else "other"))
    for seed in seeds:
        sdir = out / f"seed{seed}"
        if not (run or sdir.exists()):
            continue
        for schedule in schedules:
            rdir = sdir / f"{schedule}-{steps}steps"
            phases = after_phases(rdir, schedule, init)
            if run and not all((d / "adapter_config.json").exists() for d in phases[-1][1:]):
                run_schedule(paths["rl"], init, rdir, schedule, seed, steps, stage)
            if not rdir.exists():
                continue
            signal.setdefault(schedule, []).append(R.phase_signal(rdir))  # --status: a phase under way counts its steps
            costs.setdefault(schedule, []).append(phase_costs(rdir))
            for phase in PHASES[schedule]:
                if "rubric" in phase and (rdir / phase / "judge_samples.jsonl").exists():
                    logged.setdefault(f"{schedule} {phase}", []).append(logged_naming(rdir / phase, implied))
            for k, (phase, rubric, judge) in enumerate(phases):
                if not (rdir / phase / "adapter" / "adapter_config.json").exists():
                    break  # --status: this phase has not finished
                # evaluations are kept by the adapters' content: judge-first and judge-only share their first phase
                key = "_".join(M.content_digest(d / "adapter_model.safetensors") for d in (rubric, judge))
                ev(schedule if k == len(phases) - 1 else f"{schedule} after {phase}", rubric, judge, sdir / f"eval_{key}")
                if "rubric" in phase and (run or (sdir / f"naming_{key.split('_')[0]}" / "rubrics.jsonl").exists()):
                    # what the generator's phase changed: how often it names the implied rule
                    naming.setdefault(f"{schedule} after {phase}", []).append(
                        naming_rates(rubric, rows, sdir / f"naming_{key.split('_')[0]}"))
            if schedule != "rubric-only":  # rubric-only's judge is the SFT judge
                for what, path in list(given.items())[:1 if schedule == "judge-only" else 2]:
                    ev(f"{schedule}, {what} rubric", None, phases[-1][2],
                       sdir / f"eval_{rdir.name}_given_{path.stem.split('_')[1]}", ("--reference-rubrics", path))
            save()
    return save()


def report(res: dict) -> str:
    lines = ["# SmolLM2-135M on the implicit toy: what it reaches before RL", "",
             f"Held-out pairs: the first {N_EVAL} of the implicit eval split, each judged greedily in both orders.", "",
             "| the SFT judge reads | accuracy [95% CI] | chosen first | chosen second | format |", "|---|---|---|---|---|"]
    for r in res["sft_sensitivity"]["rows"]:
        lines.append(f"| {r['rubric']} | {pct({'mean': r['accuracy'], 'ci95': r['ci95']})} | "
                     f"{100 * (r['accuracy_fixed1'] or 0):.1f} | {100 * (r['accuracy_fixed2'] or 0):.1f} | "
                     f"{100 * (r['format_rate'] or 0):.1f} |")
    lines += ["", "| difference (paired) | points [95% CI] |", "|---|---|"]
    lines += [f"| {d['comparison']} | {100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] |"
              for d in res["sft_sensitivity"]["differences"]]
    lines += ["", "| generator | greedy: names the rule / the opposite / neither | sampled (T=1) |", "|---|---|---|"]
    for who, rep in res["naming"].items():
        g, s = rep["greedy"], rep["sampled"]
        lines.append(f"| {who} | {100 * g['right']:.0f} / {100 * g['wrong']:.0f} / {100 * g['none']:.0f} % | "
                     f"{100 * s['right']:.0f} / {100 * s['wrong']:.0f} / {100 * s['none']:.0f} % |")
    if "probe" in res:
        lines += ["", "Linear probe on the frozen verdict position (judge_reach.py, reference rubrics):"]
        for name, r in res["probe"].get("probe", {}).items():
            lines.append(f"- {name}: {json.dumps(r)[:300]}")
    lines += ["", "Trivial judges of the same pairs: " + ", ".join(
        f"{k} {100 * v['mean']:.1f}" for k, v in res["trivial"].items() if k != "by_type")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--out", default="runs/smol_implicit")
    ap.add_argument("--seed", type=C.seed_value, default=0, help="the SFT seed")
    ap.add_argument("--skip-probe", action="store_true", help="leave out the linear probe (about 20 min)")
    ap.add_argument("--publish", action="store_true", help="write docs/results/smol_implicit_reach.json (and, with "
                    "--ablation, docs/results/smol_implicit_ablation.json)")
    ap.add_argument("--ablation", action="store_true", help="then the schedules from the SFT adapters (hours on 2 cores)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="--ablation: training seeds")
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    ap.add_argument("--rl-steps", type=int, default=RL_STEPS, help="--ablation: GRPO steps of every phase")
    ap.add_argument("--judge-recipe", type=Path, default=None, metavar="DIR",
                    help="--ablation: start the judge from this experiments/smol_judge_recipes.py try (DIR/sft_judge/adapter, "
                         "its sensitivity in DIR/sens) instead of this run's SFT judge")
    ap.add_argument("--status", action="store_true",
                    help="--ablation: run nothing; summarize every phase, evaluation and naming measurement finished so "
                         "far into the study's status.json (safe beside the running study; --publish: into the docs)")
    a = ap.parse_args(argv)
    out = C.check_writable(a.out)
    check_config(out, {**config(), "seed": a.seed})
    t0 = time.perf_counter()
    paths = R.make_data(out, SPLITS)
    if a.status:
        if not (a.ablation and (out / "report.md").exists()):
            raise SystemExit(f"error: --status reads a study under way: give --ablation, and run {rel(out)}'s reach first")
        return study(a, out, paths, (out / "sft_rubric" / "adapter", out / "sft_judge" / "adapter"), t0)
    res: dict = {"config": {**config(), "seed": a.seed}, "trivial": trivial_judges(paths, N_EVAL, out)}
    rows = C.read_jsonl_resumable(paths["eval"])[:N_EVAL]
    res["naming"] = {"base": naming_rates(None, rows, out / "naming_base")}
    C.log.info("base naming %s (%.0fs)", res["naming"]["base"]["greedy"], time.perf_counter() - t0)
    rubric, judge = sft(paths["sft"], out, a.seed)
    C.log.info("SFT done (%.0fs)", time.perf_counter() - t0)
    res["sft_sensitivity"] = sensitivity(rubric, judge, paths["eval"], out / "sens_sft")  # first: it decides what is next
    C.log.info("SFT sensitivity %s (%.0fs)", [(r["name"], round(r["accuracy"], 3)) for r in res["sft_sensitivity"]["rows"]],
               time.perf_counter() - t0)
    res["naming"]["SFT"] = naming_rates(rubric, rows, out / "naming_sft")
    C.log.info("SFT naming %s (%.0fs)", res["naming"]["SFT"]["greedy"], time.perf_counter() - t0)
    if not a.skip_probe:
        res["probe"] = probe(paths, out)
    res["seconds"] = time.perf_counter() - t0
    text = report(res)
    C.atomic_write_text(out / "report.md", text)
    C.atomic_write_text(out / "summary.json", json.dumps(res, indent=2))
    if a.publish:
        C.atomic_write_text(ROOT / "docs" / "results" / "smol_implicit_reach.json", json.dumps(res, indent=2))
    print(text)
    if a.ablation:
        study(a, out, paths, (rubric, judge), t0)
    print(f"done in {time.perf_counter() - t0:.0f}s; {rel(out / 'report.md')}")
    return res


def study(a, out: Path, paths: dict[str, Path], sft_adapters: tuple[Path, Path], t0: float) -> dict:
    """--ablation: the schedules from the SFT adapters (or, with --status, what of them has finished)."""
    abl = out / f"ablation-{a.rl_steps}steps"  # a short run (a cost probe) keeps apart from the study
    init, sft_sens, judge_tokens = sft_adapters, out / "sens_sft", JUDGE_TOKENS
    if a.judge_recipe:
        abl = abl.with_name(f"{abl.name}-{a.judge_recipe.name}")
        init, sft_sens = (sft_adapters[0], a.judge_recipe / "sft_judge" / "adapter"), a.judge_recipe / "sens"
        if not (sft_sens / "sensitivity.json").exists():
            raise SystemExit(f"error: {sft_sens}: no sensitivity.json; finish that try first (smol_judge_recipes.py)")
        # the try's judge budget (its trajectories may be longer than the reach's): what its evaluations used
        judge_tokens = int(json.loads((sft_sens / "own" / "run_signature.json").read_text())["max_judge_tokens"])
    summ = ablation(paths, init, abl, a.seeds, a.rl_steps, a.schedules, sft_sens, judge_tokens, run=not a.status)
    if a.publish:
        C.atomic_write_text(ROOT / "docs" / "results" / "smol_implicit_ablation.json", json.dumps(
            {"config": {**config(), "stage_args": stage_args(judge_tokens), "rl_steps": a.rl_steps, "seeds": a.seeds,
                        "schedules": a.schedules, "sft": [rel(i) for i in init]},
             "finished": not a.status, **summ}, indent=2))
    for r in summ["rows"]:
        print(f"{r['judge']}: {pct(r['accuracy'])} pooled {pct(r['interval'])}")
    for name, d in summ["differences"].items():
        print(f"{name}: {pct(d)}")
    print(f"{'status' if a.status else 'summary'} in {rel(abl)} ({time.perf_counter() - t0:.0f}s)")
    return summ


if __name__ == "__main__":
    C.run_main(main)
