"""Benchmark of ``nd-filter`` on a synthetic dialogue-like corpus (seeded, reproducible).

    python benchmarks/bench_filter.py --pairs 1000000 10000000

For each size it writes ``query``/``response`` files of adjacent turns of a synthetic turn stream,
runs the installed ``nd-filter`` on them in a subprocess (scores.txt, top.* and bottom.* written,
default key ``normalized``) and prints wall seconds, pairs/s, the ratio to the issue's target of
1M pairs/s, and peak memory: the largest single process (``getrusage(RUSAGE_CHILDREN)``) and the
sum over the process tree, sampled from /proc every 20 ms.
(``getrusage`` via ``os.wait4``, so each run is measured on its own.)

The turn stream mimics tokenised chit-chat: 40% of the turns are short generic replies drawn from
a Zipfian pool ("yeah", "i don't know", "lol", ...), the rest are 3-25 words drawn from a Zipfian
vocabulary (mostly unique lines), with a little noise that the ``normalized`` key has to undo:
capitalised turns, doubled/trailing spaces, tabs and non-ASCII characters.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

TARGET_PAIRS_PER_S = 1_000_000

GENERIC = [
    "yeah", "i don't know", "lol", "ok", "okay", "haha", "hahaha", "no", "yes", "yep", "nope",
    "sure", "me too", "same", "thanks", "thank you", "what ?", "what do you mean ?", "why ?",
    "really ?", "oh really ?", "cool", "that's cool", "nice", "good", "i'm good", "i'm fine",
    "how are you ?", "hi", "hello", "hey", "i'm not sure", "maybe", "i guess", "true", "right",
    "exactly", "same here", "oh", "oh ok", "hmm", "lmao", "wow", "awesome", "great", "i agree",
    "i see", "i think so", "not really", "of course", "what about you ?", "and you ?", "good night",
    "bye", "see you", "you too", "sorry", "no problem", "i know", "i love it", "that's funny",
]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "so", "pe", "di", "gu", "ba", "ze", "fo", "hi",
             "ju", "wa", "re", "ti", "no", "sa", "ve", "co", "mu", "li"]
COMMON = ("i you the a to and it is that of what do in my me have so not but for are be like "
          "just was your with this on can know think how it's don't i'm all about get go if "
          "would really good one they we there at or he she out time people love want see").split()


def _vocabulary(rng: np.random.Generator, size: int) -> List[bytes]:
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < size:
        k = int(rng.integers(1, 5))  # 24^1 + ... + 24^4 possible words
        w = "".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), k))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return [w.encode() for w in words]


def _zipf_probs(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


class TurnGenerator:
    """Seeded stream of dialogue-like turns (bytes, no newline), generated a block at a time."""

    def __init__(self, seed: int = 12345, vocab_size: int = 30000, pool_size: int = 5000,
                 generic_share: float = 0.4):
        self.rng = np.random.default_rng(seed)
        vocab = _vocabulary(self.rng, vocab_size)
        self.p_word = _zipf_probs(len(vocab), 1.07)
        width = max(map(len, vocab)) + 1
        self.word_len = np.array([len(w) + 1 for w in vocab], dtype=np.int64)
        self.word_mat = np.zeros((len(vocab), width), dtype=np.uint8)
        for i, w in enumerate(vocab):
            self.word_mat[i, :len(w)] = np.frombuffer(w, np.uint8)
            self.word_mat[i, len(w)] = 32
        # generic replies: the hand-written ones first (most frequent), then 1-3 frequent words
        pool = list(dict.fromkeys(g.encode() for g in GENERIC))
        seen = set(pool)
        p200 = _zipf_probs(200, 1.0)
        while len(pool) < pool_size:
            ids = self.rng.choice(200, size=(pool_size, 3), p=p200)
            ks = self.rng.integers(1, 4, pool_size)
            for row, k in zip(ids.tolist(), ks.tolist()):
                line = b" ".join(vocab[i] for i in row[:k])
                if line not in seen and len(pool) < pool_size:
                    seen.add(line)
                    pool.append(line)
        self.pool = np.array(pool, dtype=object)
        self.p_pool = _zipf_probs(len(pool), 1.2)
        self.generic_share = generic_share

    def _content(self, m: int) -> List[bytes]:
        rng = self.rng
        lengths = np.clip(rng.geometric(0.09, m) + 2, 3, 25)
        toks = rng.choice(len(self.p_word), size=int(lengths.sum()), p=self.p_word)
        wl = self.word_len[toks]
        rows = self.word_mat[toks]
        buf = rows[np.arange(rows.shape[1]) < wl[:, None]]
        ends = np.cumsum(lengths) - 1  # last token of each line
        buf[np.cumsum(wl)[ends] - 1] = 10  # its trailing space becomes the newline
        return buf.tobytes().split(b"\n")[:-1]

    def block(self, m: int) -> List[bytes]:
        rng = self.rng
        generic = rng.random(m) < self.generic_share
        lines = np.empty(m, dtype=object)
        lines[generic] = self.pool[rng.choice(len(self.pool), size=int(generic.sum()), p=self.p_pool)]
        lines[~generic] = self._content(int((~generic).sum()))
        out = lines.tolist()
        # noise the normalized key undoes: capitals 2%, spacing 0.5%, non-ASCII 1%
        noise = rng.random(m)
        for i in np.flatnonzero(noise < 0.035).tolist():
            r = noise[i]
            if r < 0.02:
                out[i] = out[i].capitalize()
            elif r < 0.025:
                out[i] = out[i].replace(b" ", b"  ", 1) + (b" " if r < 0.0235 else b"\t")
            else:
                out[i] = out[i] + (" 😂".encode() if r < 0.03 else " café".encode())
        return out


def make_corpus(n_pairs: int, directory: Path, seed: int = 12345, block: int = 1 << 20) -> None:
    """query/response files of ``n_pairs`` adjacent turns of one seeded turn stream."""
    gen = TurnGenerator(seed)
    with open(directory / "query", "wb") as fq, open(directory / "response", "wb") as fr:
        done = 0
        prev: Optional[bytes] = None
        while done < n_pairs + 1:
            turns = gen.block(min(block, n_pairs + 1 - done))
            if prev is None:
                fq.write(b"\n".join(turns[:-1]) + b"\n" if len(turns) > 1 else b"")
                fr.write(b"\n".join(turns[1:]) + b"\n" if len(turns) > 1 else b"")
            else:
                fq.write(b"\n".join([prev] + turns[:-1]) + b"\n")
                fr.write(b"\n".join(turns) + b"\n")
            prev = turns[-1]
            done += len(turns)


class TreeRss(threading.Thread):
    """Peak of the summed RSS of a process and its descendants, sampled from /proc."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self._done = pid, interval, 0, threading.Event()

    @staticmethod
    def _tree(pid: int) -> List[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return out

    def run(self) -> None:
        while not self._done.is_set():
            total = 0
            for p in self._tree(self.pid):
                try:
                    with open(f"/proc/{p}/statm") as f:
                        total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def nd_filter_bin() -> str:
    here = Path(sys.executable).parent / "nd-filter"
    return str(here) if here.exists() else "nd-filter"


def run_filter(workdir: Path, extra: List[str]) -> dict:
    out = workdir / "out"
    cmd = [nd_filter_bin(), "--query", str(workdir / "query"), "--response", str(workdir / "response"),
           "--out-dir", str(out), "--bottom", "--quiet", "--scratch-dir", str(workdir)] + extra
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    sampler = TreeRss(proc.pid)
    sampler.start()
    # wait4: this run's own rusage (its ru_maxrss covers its waited-for child processes too)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    tree_peak = sampler.stop()
    if rc != 0:
        raise SystemExit(f"nd-filter failed with exit code {rc}: {' '.join(cmd)}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "seconds": seconds,
        "pairs_per_s": summary["pairs"] / seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_process_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_rss_mb": tree_peak / 2 ** 20,
        "summary": summary,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest is reported")
    p.add_argument("--workdir", default=None, help="where the corpus is generated (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated corpus")
    p.add_argument("--generate-only", metavar="DIR", default=None,
                   help="only write the corpus of the first --pairs size into DIR")
    p.add_argument("nd_filter_args", nargs=argparse.REMAINDER,
                   help="after --, extra nd-filter options (e.g. -- --key prefix:3)")
    args = p.parse_args(argv)
    if args.generate_only:
        make_corpus(args.pairs[0], Path(args.generate_only), args.seed)
        return 0
    extra = [a for a in args.nd_filter_args if a != "--"]
    print(f"machine: {os.cpu_count()} cores, {os.uname().machine}; nd-filter {' '.join(extra) or '(defaults)'}")
    for n in args.pairs:
        tmp = tempfile.mkdtemp(prefix=f"bench-filter-{n}-", dir=args.workdir)
        work = Path(tmp)
        t0 = time.perf_counter()
        # in another process, so that this one stays small: a child forked from it would carry
        # the generator's memory into nd-filter's peak RSS (Linux keeps ru_maxrss across exec)
        subprocess.run([sys.executable, __file__, "--pairs", str(n), "--seed", str(args.seed),
                        "--generate-only", str(work)], check=True)
        size = (work / "query").stat().st_size + (work / "response").stat().st_size
        print(f"{n:,} pairs: corpus {size / 2 ** 20:.0f} MiB generated in {time.perf_counter() - t0:.1f} s")
        load = os.getloadavg()[0]
        runs = [run_filter(work, extra) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        s = best["summary"]
        print(f"  load average before the runs: {load:.2f} (other processes on this machine)")
        print(f"  nd-filter: {best['seconds']:.2f} s, {best['pairs_per_s']:,.0f} pairs/s "
              f"({best['pairs_per_s'] / TARGET_PAIRS_PER_S:.2f}x the 1M pairs/s target), "
              f"cpu {best['cpu_s']:.2f} s, peak RSS {best['max_process_rss_mb']:.0f} MiB (largest process), "
              f"{best['tree_rss_mb']:.0f} MiB (process tree, sampled)")
        print(f"  unique responses {s['unique']:,}, zero share {s['zero_share']:.1%}, median {s['median']:.3f}, "
              f"top {s.get('top')}, bottom {s.get('bottom')}")
        if not args.keep:
            for f in sorted(work.rglob("*"), reverse=True):
                f.rmdir() if f.is_dir() else f.unlink()
            work.rmdir()
        else:
            print(f"  corpus kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
