"""A model worker's batches stream through one engine loop: batches in flight share rounds, each gets back
only its own rows, a loop reuses the rows of sequences that left, and a failed round fails only its culprit."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import GREEDY_MAX_NEW
from specray.config import load_config
from specray.data.rows import PromptRow
from specray.distributed.runner import BatchRunner
from specray.engine.decoding import Decoding
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.factory import make_policy


CONTINUOUS = "generation.batching=continuous"


class Recording:
    """The engine, each round slowed a little (so batches given together overlap) and its rows recorded;
    a round with the `poison` id in it fails. For `run_together` it says when its first round starts and
    holds it until every batch given has reached the stream, so the batches join in the order given and
    overlap however the callers' threads are scheduled (on a loaded machine the poison batch once came
    first and failed its round alone, and a test failed in CI)."""

    def __init__(self, engine, poison: str | None = None):
        self.engine, self.poison = engine, poison
        self.rounds: list[set[str]] = []
        self.to_arrive = 0  # batches still to reach the stream
        self.lock = threading.Lock()
        self.all_arrived = threading.Event()
        self.all_arrived.set()
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def expect(self, batches: int) -> None:
        self.to_arrive = batches
        self.all_arrived.clear()

    def arrived(self) -> None:
        with self.lock:
            self.to_arrive -= 1
            if self.to_arrive <= 0:
                self.all_arrived.set()

    def verify(self, state, *args):
        self.started.set()
        self.all_arrived.wait(timeout=30)
        ids = {s.prompt_id for s in state.active}
        self.rounds.append(ids)
        time.sleep(0.005)
        if self.poison in ids:
            raise RuntimeError(f"poison row {self.poison}")
        return self.engine.verify(state, *args)


def text(prompt: list[int]) -> str:
    return " ".join(f"w{t}" for t in prompt)


def batch(prompts, start: int, stop: int, domain: str, prefix: str = "p") -> tuple[PromptRow, ...]:
    return tuple(PromptRow(f"{prefix}{i}", text(prompts[i]), domain, i) for i in range(start, stop))


def runner(engine, batch_size: int, *overrides: str) -> BatchRunner:
    cfg = load_config(None, [f"generation.max_new_tokens={GREEDY_MAX_NEW}", f"generation.batch_size={batch_size}",
                             "models.target=t", "models.draft=d", *overrides])
    return BatchRunner(cfg, "data.jsonl", make_engine=lambda models, device: engine)


def run_together(run: BatchRunner, *calls, engine: Recording | None = None) -> list:
    """Give the runner every call at once, from threads of their own as a threaded actor does. With `engine`,
    the first call's batch starts decoding first and its first round waits until every other call's batch
    has reached the runner's stream."""
    if engine is not None:
        engine.expect(len(calls))
        put = run.stream.inbox.put

        def put_and_count(request, *args, **kwargs):
            put(request, *args, **kwargs)
            engine.arrived()

        run.stream.inbox.put = put_and_count
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(run, *calls[0])]
        if engine is not None:
            engine.started.wait(timeout=30)
        futures += [pool.submit(run, *call) for call in calls[1:]]
        return [f.exception() or f.result() for f in futures]


def test_batches_in_flight_share_one_loop_and_each_gets_back_only_its_own_rows(target, draft, tokenizer, prompts, references):
    engine = Recording(SpeculativeEngine(target, draft, tokenizer))
    code, chat = batch(prompts, 0, 6, "code"), batch(prompts, 6, 12, "chat")
    specs = ("static:1", "heuristic:cost=off")  # kinds differ, batch settings agree
    outs = run_together(runner(engine, 8, CONTINUOUS), ("code", code, specs[0]), ("chat", chat, specs[1]), engine=engine)
    for rows, out, spec in zip((code, chat), outs, specs):
        ids = [r.id for r in rows]
        results = out.results.to_pydict()
        assert results["id"] == ids and results["policy"] == [make_policy(spec).name] * len(ids)
        assert results["output_tokens"] == [references[r.index] for r in rows], "lossless, whoever shared the rounds"
        assert set(out.traces["prompt_id"].to_pylist()) <= set(ids)
        assert sum(results["drafted"]) == out.traces.num_rows, "every trace row of the batch, and only those"
    assert shared(engine.rounds, {r.id for r in code}, {r.id for r in chat}), "the two batches shared rounds of one loop"


def shared(rounds: list[set[str]], first: set[str], second: set[str]) -> bool:
    return any(ids & first and ids & second for ids in rounds)


def test_draining_runs_each_batch_to_its_end_alone(target, draft, tokenizer, prompts, references):
    engine = Recording(SpeculativeEngine(target, draft, tokenizer))
    code, chat = batch(prompts, 0, 3, "code"), batch(prompts, 3, 6, "chat")
    outs = run_together(runner(engine, 8, "generation.batching=drain"), ("code", code, "static:2"), ("chat", chat, "static:2"))
    for rows, out in zip((code, chat), outs):
        assert out.results["output_tokens"].to_pylist() == [references[r.index] for r in rows]
    assert not shared(engine.rounds, {r.id for r in code}, {r.id for r in chat})


def test_a_failed_round_reruns_its_batches_alone_and_only_the_culprit_fails(target, draft, tokenizer, prompts, references):
    engine = Recording(SpeculativeEngine(target, draft, tokenizer), poison="poison")
    good = batch(prompts, 0, 4, "code")
    bad = (PromptRow("poison", text(prompts[4]), "code", 4), *batch(prompts, 5, 7, "code"))
    out, failure = run_together(runner(engine, 8, CONTINUOUS), ("code", good, "static:2"), ("code", bad, "static:2"),
                                engine=engine)
    assert out.results["output_tokens"].to_pylist() == [references[r.index] for r in good]
    assert isinstance(failure, RuntimeError) and str(failure) == "poison row poison"
    assert any("poison" in ids and "p0" in ids for ids in engine.rounds), "the good batch was in the failed round"


def test_a_loop_reuses_the_rows_of_sequences_that_left(target, draft, tokenizer, prompts, references):
    engine = SpeculativeEngine(target, draft, tokenizer)
    policy = make_policy("heuristic")
    loop = Decoding(engine, GenerationConfig(max_new_tokens=GREEDY_MAX_NEW), policy, max_batch=3)
    for wave in (range(0, 3), range(3, 6), range(6, 9)):
        seqs = loop.add([prompts[i] for i in wave], [str(i) for i in wave], ["code"] * 3, [policy] * 3)
        with torch.no_grad():
            while loop.busy:
                loop.step()
        traces = loop.trace.take({s.index for s in seqs})
        loop.release(seqs)
        assert [s.tokens[s.prompt_len:] for s in seqs] == [references[i] for i in wave]
        assert {s.index for s in seqs} == {0, 1, 2}, "the rows the last wave left"
        assert set(traces["prompt_id"].to_pylist()) <= {str(i) for i in wave}
        assert traces.num_rows == sum(s.drafted for s in seqs)


def test_rows_of_other_batch_settings_cannot_join_a_loop(target, draft, tokenizer):
    engine = SpeculativeEngine(target, draft, tokenizer)
    loop = Decoding(engine, GenerationConfig(max_new_tokens=4), make_policy("static:2"), max_batch=2)
    assert loop.accepts(make_policy("heuristic:cost=off")) and not loop.accepts(make_policy("static:2,draft=ngram"))
    with pytest.raises(ValueError, match="agree on draft_source"):
        loop.add([[5, 6]], ["a"], ["code"], [make_policy("static:2,draft=ngram")])
    with pytest.raises(ValueError, match="target-only rows and drafting rows"):
        loop.add([[5, 6]], ["b"], ["code"], [None])
