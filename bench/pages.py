"""The pages `make bench` drives in headless Chromium: pocketlm's own page and the transformers.js page.

What every runtime generates (the protocol shared with native runs in bench/run.py), the JavaScript each
page runs (OURS_JS through window.pocketlm as a user calls it; TJS_JS through bench/web/tjs.mjs), and
Browser, which loads a page cold (a fresh context) and warm (a reload) and reads bytes fetched and the
renderer's peak RSS.
"""

from __future__ import annotations

import os
import urllib.request
import uuid

from webtools.measure_page import CHROMIUM, CHROMIUM_ARGS, track_requests

NEW_TOKENS = 128
PROMPT_TOKENS = 16
PREFILL_LENGTHS = (16, 128)
GEN = {"max_new_tokens": NEW_TOKENS, "temperature": 0.0, "stop": [], "ignore_eos": True}
OWN_TASK_INPUT = {  # file:// loads: the shipped models with their own task (what the page does)
    "sql-autocomplete": ["SELECT name FROM ", {"schema": "singer(Singer_ID, Name, Country, Age)", "max_new_tokens": 16}],
    "reminder-extract": ["remind me at 7pm to walk the dog", {}],
}


OURS_JS = """async ({manifest, variant, threads, prompt, opts, runs, prefill, ownTask, warmup, coldOnly, pair, keep}) => {
  let firstAt = null;
  const m = await pocketlm.load(manifest, {variant, threads, warmup});
  const ready = performance.now();
  try {
    const o1 = ownTask ? {...ownTask[1]} : opts;
    const first = await m.generate(ownTask ? ownTask[0] : prompt,
                                   {...o1, onToken: () => { if (firstAt === null) firstAt = performance.now(); }});
    if (coldOnly) {  // a repeat cold load; with `pair`, also the first generation after the warm-up and the next ones
      const res = {ready_ms: ready, first_token_ms: firstAt ?? performance.now(), load_stats: m.stats};
      if (keep) await window.pocketlmFileCache?.settled();  // before a reload (bench-ab --reload)
      if (!pair) return res;
      const warm = await m.warmedUp;
      const after = await m.generate(prompt, pair.opts);
      res.after_warm_decode_ms = after.stats.decode_ms;
      res.after_warm_new_tokens = after.token_ids.length - 1;
      res.warm_up = warm;
      res.runs = [];
      for (let i = 0; i < pair.runs; i++) {
        const o = await m.generate(prompt, pair.opts);
        res.runs.push({tokens: o.token_ids.length - 1, decode_ms: o.stats.decode_ms});
      }
      return res;
    }
    const warm = await m.warmedUp;  // the idle-time warm-up, which the first generation interrupted, is over
    const after = await m.generate(ownTask ? ownTask[0] : prompt, o1);
    const res = {ready_ms: ready, first_token_ms: firstAt ?? performance.now(), tokens: first.token_ids,
                 first_decode_ms: first.stats.decode_ms, first_new_tokens: first.token_ids.length - 1,
                 after_warm_decode_ms: after.stats.decode_ms, after_warm_new_tokens: after.token_ids.length - 1,
                 warm_up: warm, load_stats: m.stats, threads: m.threads, isolated: self.crossOriginIsolated, runs: [], prefill: {},
                 pyodide_heap_bytes: first.stats.pyodide_heap_bytes};
    for (let i = 0; i < runs; i++) {
      const o = await m.generate(prompt, opts);
      res.runs.push({tokens: o.token_ids.length - 1, decode_ms: o.stats.decode_ms, timing: o.stats.timing,
                     same: o.token_ids.join() === first.token_ids.join()});
      res.pyodide_heap_bytes = o.stats.pyodide_heap_bytes;
    }
    for (const [n, p] of prefill) {
      res.prefill[n] = [];
      for (let i = 0; i < runs; i++) res.prefill[n].push((await m.generate(p, {...opts, max_new_tokens: 1})).stats.prefill_ms);
    }
    await window.pocketlmFileCache?.settled();  // the files kept, as after a user's idle second: the reload reads them
    return res;
  } finally { m.dispose(); }
}"""
# Interleaved decode (bench/run.py --interleave): each page keeps its model loaded and times one generation
# per call, so the two runtimes can take turns on a machine whose speed drifts.
OURS_HOLD_JS = """async ({manifest, variant, threads, prompt, opts, warmup}) => {
  window.benchModel = await pocketlm.load(manifest, {variant, threads, warmup});
  await window.benchModel.generate(prompt, opts);
  await window.benchModel.warmedUp;
  return true;
}"""
OURS_ONCE_JS = """async ({prompt, opts}) => {
  const o = await window.benchModel.generate(prompt, opts);
  return {tokens: o.token_ids.length - 1, decode_ms: o.stats.decode_ms};
}"""
TJS_WAIT = "await new Promise((r) => { const t = () => window.tjsBench ? r() : setTimeout(t, 5); t(); });"
TJS_HOLD_JS = "async (args) => { " + TJS_WAIT + " return await window.tjsBench.load(args); }"
TJS_ONCE_JS = "async (args) => await window.tjsBench.once(args)"
TJS_JS = "async (args) => { " + TJS_WAIT + " return await window.tjsBench.run(args); }"


class Browser:
    """One headless Chromium (Debian's), launched with a marker so its renderer processes can be found."""

    def __init__(self, playwright, extra_args: tuple[str, ...] = ()):
        self.playwright, self.extra_args = playwright, extra_args
        self.marker = f"--pocketlm-bench={uuid.uuid4().hex}"
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                  args=CHROMIUM_ARGS + list(extra_args) + [self.marker])
        self.version = self.browser.version

    def renderers(self) -> set[int]:
        """Pids of this browser's renderer processes (descendants of the process carrying the marker)."""
        procs = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ")  # zygote children rewrite theirs space-separated
                    with open(f"/proc/{pid}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    procs[int(pid)] = (ppid, cmd)
                except (OSError, ValueError, IndexError):
                    pass
        roots = {p for p, (_, cmd) in procs.items() if self.marker.encode() in cmd and b"--type=" not in cmd}

        def ours(p):
            seen = 0
            while p in procs and seen < 10:
                if p in roots:
                    return True
                p, seen = procs[p][0], seen + 1
            return False

        return {p for p, (_, cmd) in procs.items() if b"--type=renderer" in cmd and ours(p)}

    def measure(self, url: str, js: str, cold_args: dict, warm_args: dict | None = None, mode: str = "http") -> dict:
        """`js` in a fresh context (cold), then, with warm_args, again after a reload (warm); bytes, peak RSS."""
        before = self.renderers()
        context = self.browser.new_context()
        try:
            seen = track_requests(context, mode)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            cold = page.evaluate(js, cold_args)
            page.wait_for_timeout(100)
            cold["bytes"], cold["requests"] = sum(n for _, _, n in seen), len(seen)
            warm = None
            if warm_args is not None:
                seen.clear()
                page.reload()
                warm = page.evaluate(js, warm_args)
                warm["bytes"], warm["requests"] = sum(n for _, _, n in seen), len(seen)
            new = self.renderers() - before
            return {"cold": cold, "warm": warm, "peak_rss_bytes": max((vm_hwm(p) for p in new), default=None),
                    "page_errors": errors[:3]}
        finally:
            context.close()

    def fresh(self) -> "Browser":
        """This browser closed and a new one launched (nothing of earlier pages left running)."""
        self.close()
        return Browser(self.playwright, self.extra_args)

    def close(self):
        self.browser.close()


def vm_hwm(pid: int) -> int | None:
    """Peak resident memory (VmHWM) of a process, bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def page_args(name: str, variant: str, threads: int, prompts: dict, warmup: str, opts: dict = GEN) -> dict:
    """OURS_JS's arguments for a bench model over http, before the timed runs (none yet)."""
    return {"manifest": f"/bench-models/{name}/manifest.json", "variant": variant, "threads": threads,
            "prompt": prompts[PROMPT_TOKENS]["text"], "opts": opts, "ownTask": None, "warmup": warmup,
            "runs": 0, "prefill": []}


def ours_http(br: Browser, base: str, name: str, variant: str, threads: int, prompts: dict, runs: int, warm: bool,
              warmup: str = "idle") -> dict:
    """The page: a cold load with the first (correctness) generation; the timed runs after a reload when
    `warm` (cold and warm load figures), else in the same cold page. `warmup`: pocketlm.load's option."""
    args = page_args(name, variant, threads, prompts, warmup)
    timed = {**args, "runs": runs, "prefill": [[n, prompts[n]["text"]] for n in PREFILL_LENGTHS]}
    if warm:  # the cold page runs its own `runs` too: its steady state, beside its first generation after the warm-up
        return br.measure(f"{base}/index.html?autoload=0", OURS_JS, {**args, "runs": runs}, timed)
    return br.measure(f"{base}/index.html?autoload=0", OURS_JS, timed)


def cold_loads(br: Browser, base: str, name: str, dtype: str | None, prompts: dict, n: int, warmup: str = "idle",
               pair_runs: int = 0) -> dict:
    """`n` more cold loads (fresh contexts, fp32, one thread) of the page and, with `dtype`, of transformers.js,
    alternating, each to its first token of an 8-token generation: {"ours": [{ready_ms, first_token_ms}], "tjs": [...]}.
    One cold load swings by ±20% here; the report takes the median of all of them. With `pair_runs`, each page
    then also times its first 128-token generation after the warm-up and `pair_runs` more (after_warm_*, runs)."""
    out = {"ours": [], "tjs": []}
    short = {**GEN, "max_new_tokens": 8}
    pair = {"opts": GEN, "runs": pair_runs} if pair_runs > 0 and warmup == "idle" else None
    for _ in range(n):
        args = {**page_args(name, "fp32", 1, prompts, warmup, opts=short), "coldOnly": True, "pair": pair}
        out["ours"].append(br.measure(f"{base}/index.html?autoload=0", OURS_JS, args)["cold"])
        if dtype:
            targs = {"name": name, "dtype": dtype, "threads": 1, "ids": prompts[PROMPT_TOKENS]["ids"], "newTokens": 8,
                     "timedRuns": 0, "warmRuns": 0, "prefill": []}
            out["tjs"].append(br.measure(f"{base}/bench/tjs.html", TJS_JS, targs)["cold"])
    return out


def ours_file(br: Browser, site: str, name: str, warmup: str = "idle") -> dict:
    url = "file://" + urllib.request.pathname2url(os.path.join(site, "index.html")) + "?autoload=0"
    args = {"manifest": name, "variant": "fp32", "threads": 1, "prompt": "", "opts": {}, "runs": 0, "prefill": [],
            "ownTask": OWN_TASK_INPUT[name], "warmup": warmup}
    return br.measure(url, OURS_JS, args, args, mode="file")


def tjs_http(br: Browser, base: str, name: str, dtype: str, threads: int, prompts: dict, runs: int, warm: bool) -> dict:
    args = {"name": name, "dtype": dtype, "threads": threads, "ids": prompts[PROMPT_TOKENS]["ids"], "newTokens": NEW_TOKENS}
    timed = {**args, "timedRuns": runs, "warmRuns": 1, "prefill": [[n, prompts[n]["ids"]] for n in PREFILL_LENGTHS]}
    if warm:
        return br.measure(f"{base}/bench/tjs.html", TJS_JS, {**args, "timedRuns": 0, "warmRuns": 0, "prefill": []}, timed)
    return br.measure(f"{base}/bench/tjs.html", TJS_JS, timed)


def interleaved(br: Browser, base: str, name: str, variant: str, dtype: str, prompts: dict, rounds: int) -> dict:
    """Decode of the page and of transformers.js taking turns, one thread: both pages open in one context,
    each model loaded once (the page's warm-up over), then `rounds` rounds of one timed generation each,
    the order alternating (ABBA...). A slow stretch of the machine then falls on both runtimes alike.
    -> {"ours": [{tokens, decode_ms}, ...], "tjs": [...]} in round order."""
    context = br.browser.new_context()
    try:
        ours, tjs = context.new_page(), context.new_page()
        ours.goto(f"{base}/index.html?autoload=0")
        tjs.goto(f"{base}/bench/tjs.html")
        args = page_args(name, variant, 1, prompts, "idle")
        targs = {"name": name, "dtype": dtype, "threads": 1, "ids": prompts[PROMPT_TOKENS]["ids"], "newTokens": NEW_TOKENS}
        ours.evaluate(OURS_HOLD_JS, args)
        tjs.evaluate(TJS_HOLD_JS, targs)
        out = {"ours": [], "tjs": []}
        for r in range(rounds):
            for who in (("ours", "tjs") if r % 2 == 0 else ("tjs", "ours")):
                page = ours if who == "ours" else tjs
                page.bring_to_front()  # the page being timed is the visible one
                out[who].append(page.evaluate(OURS_ONCE_JS, {"prompt": args["prompt"], "opts": args["opts"]})
                                if who == "ours" else page.evaluate(TJS_ONCE_JS, targs))
        return out
    finally:
        context.close()
