"""The Method protocol carries what later set-ups need: a second stream of batches, extra modules, an
update after the optimiser step; all of it resumes bit for bit after Ctrl-C."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_train import RESUME_KW, InterruptAt, blobs, mlp, weights_equal

from dltricks.loop.method import Batch, Method, Stream
from dltricks.loop.tasks import Classification
from dltricks.loop.training import TrainingInterrupted, fit


class EntropyWithEMA(Method):
    """Cross-entropy on labels + entropy minimisation on an unlabelled stream (a semi-supervised step),
    with an EMA copy of the model updated after every step (a mean teacher's update)."""

    def __init__(self, model, unlabelled, seed=0):
        super().__init__(Classification())
        self.stream = Stream(unlabelled, 8, seed)
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.steps = 0

    def modules(self):
        return {"ema": self.ema}

    def loss(self, model, batch: Batch, progress: float):
        out = model(batch.x)
        u = model(self.stream.next(batch.x.device))
        p = F.softmax(u, 1)
        entropy = -(p * F.log_softmax(u, 1)).sum(1).mean()
        return self.task.loss(out, batch.y) + progress * entropy, out

    @torch.no_grad()
    def after_step(self, model):
        self.steps += 1
        for e, m in zip(self.ema.parameters(), model.parameters()):
            e.mul_(0.9).add_(m.detach(), alpha=0.1)

    def state_dict(self):
        return {**super().state_dict(), **{f"stream.{k}": v for k, v in self.stream.state_dict().items()}}

    def load_state_dict(self, state):
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("stream.")})
        self.stream.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("stream.")})

    def extra_state(self):
        return {"steps": self.steps}

    def load_extra_state(self, state):
        self.steps = state["steps"]


def test_stream_is_endless_seeded_and_resumable():
    x = torch.arange(10).float()[:, None]
    s = Stream(x, 4, seed=1)
    first = torch.cat([s.next() for _ in range(5)])  # 20 draws: two full passes over the 10 samples
    assert sorted(first[:10, 0].tolist()) == list(range(10)) and sorted(first[10:, 0].tolist()) == list(range(10))
    s2 = Stream(x, 4, seed=1)
    s2.next()
    saved = s2.state_dict()
    s3 = Stream(x, 4, seed=99)
    s3.load_state_dict(saved)
    assert torch.equal(torch.cat([s3.next() for _ in range(4)]), first[4:])


def test_a_method_with_a_second_stream_and_an_ema_update_resumes_bit_identically(tmp_path):
    x, y = blobs(120)
    unlabelled = blobs(50, seed=3)[0]
    val = blobs(40, seed=1)

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(mlp(dropout=0.3, seed=seed), at)
        method = EntropyWithEMA(model, unlabelled)
        h = fit(model, (x, y), val, method=method, checkpoint_dir=tmp_path / d, resume=resume, **RESUME_KW)
        return model, method, h

    full, m_full, h_full = run()
    assert m_full.steps == 4 * 8 and not weights_equal(m_full.ema, full)
    with pytest.raises(TrainingInterrupted):
        run(at=11, d="b")
    resumed, m, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)
    assert weights_equal(m.ema, m_full.ema) and m.steps == m_full.steps and m.stream.pos == m_full.stream.pos
