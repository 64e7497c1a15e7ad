"""Lab 09's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab09_distributed`` or ``-m lab09_distributed``).

The checks launch gloo ranks (forked from this process, as from a kernel):
each case takes a few seconds."""
import pytest

from autograder.labtest import lab_tests, locked_cell

LAB = "lab09_distributed"
pytestmark = pytest.mark.lab09_distributed


def _locked_cell(grade_id):
    return locked_cell(LAB, grade_id)


# The locked set-up cell as it is (imports, `launch`, `hd`, WORLD, TIMEOUT, train_single), and a stand-in
# for the locked measurement cell of Task 3.2 (`bubble_measured`): the formula's values, the bubble of a
# correct GPipe schedule (the check re-measures a smaller pipeline itself).
PREAMBLE = "QUICK, SEED = True, 0\n" + _locked_cell("setup") + """
MICRO = [1, 2, 4, 8]
bubble_measured = {m: 3 / (m + 3) for m in MICRO}
"""

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "all-reduce: sum, not average": (
        "task_1_1_allreduce_gradients_code", "            p.grad /= world_size\n", "",
        "task_1_1_allreduce_gradients"),
    "all-reduce: averaged twice": (
        "task_1_1_allreduce_gradients_code", "            p.grad /= world_size\n",
        "            p.grad /= world_size\n            p.grad /= world_size\n", "task_1_1_allreduce_gradients"),
    "all-reduce: a missing gradient replaced by zeros": (
        "task_1_1_allreduce_gradients_code", "        if p.grad is not None:\n",
        "        if p.grad is None:\n            p.grad = torch.zeros_like(p)\n        if True:\n",
        "task_1_1_allreduce_gradients"),
    "all-reduce: divided by a fixed 2 ranks": (
        "task_1_1_allreduce_gradients_code", "p.grad /= world_size", "p.grad /= 2", "task_1_1_allreduce_gradients"),
    "dp: every rank trains on the first shard": (
        "task_1_2_dp_train_code", "lo = s * batch_size + rank * local", "lo = s * batch_size", "task_1_2_dp_train"),
    "dp: no gradient all-reduce": (
        "task_1_2_dp_train_code", "        allreduce_gradients(model, world_size)\n", "", "task_1_2_dp_train"),
    "dp: history holds the live parameters, not clones": (
        "task_1_2_dp_train_code", "history.append([p.detach().clone() for p in model.parameters()])",
        "history.append([p for p in model.parameters()])", "task_1_2_dp_train"),
    "buckets: in forward order": (
        "task_1_3_bucketed_allreduce_code", "for p in reversed(params):", "for p in params:",
        "task_1_3_bucketed_allreduce"),
    "buckets: all-reduce launched in wait(), after backward (no overlap)": (
        "task_1_3_bucketed_allreduce_code",
        "            self._pending.append((dist.all_reduce(flat, async_op=True), flat, i))\n        ### END SOLUTION\n\n"
        "    def wait(self):\n        ### BEGIN SOLUTION\n",
        "            self._pending.append((None, flat, i))\n        ### END SOLUTION\n\n"
        "    def wait(self):\n        ### BEGIN SOLUTION\n"
        "        self._pending = [(dist.all_reduce(f, async_op=True), f, i) for _, f, i in self._pending]\n",
        "task_1_3_bucketed_allreduce"),
    "buckets: one (blocking) all-reduce per parameter": (
        "task_1_3_bucketed_allreduce_code",
        "            flat = torch.cat([q.grad.reshape(-1) for q in self.buckets[i]])\n"
        "            self._pending.append((dist.all_reduce(flat, async_op=True), flat, i))\n",
        "            for q in self.buckets[i]:\n"
        "                dist.all_reduce(q.grad)\n"
        "            flat = torch.cat([q.grad.reshape(-1) for q in self.buckets[i]])\n"
        "            self._pending.append((type(\"Done\", (), {\"wait\": lambda self: None})(), flat, i))\n",
        "task_1_3_bucketed_allreduce"),
    "buckets: state not reset in wait()": (
        "task_1_3_bucketed_allreduce_code", "        self._ready = [0] * len(self.buckets)\n        ### END SOLUTION",
        "        ### END SOLUTION", "task_1_3_bucketed_allreduce"),
    "buckets: the cap may be exceeded by one parameter": (
        "task_1_3_bucketed_allreduce_code", "if current and size + nbytes > bucket_cap_bytes:",
        "if current and size > bucket_cap_bytes:", "task_1_3_bucketed_allreduce"),
    "accumulation: all-reduce after every micro-batch": (
        "task_1_4_grad_accumulation_code", "            loss.backward()\n        allreduce_gradients(model, world_size)",
        "            loss.backward()\n            allreduce_gradients(model, world_size)",
        "task_1_4_grad_accumulation"),
    "accumulation: micro-batch losses not scaled": (
        "task_1_4_grad_accumulation_code", "targets[lo:lo + micro]) / accum_steps", "targets[lo:lo + micro])",
        "task_1_4_grad_accumulation"),
    "accumulation: zero_grad per micro-batch": (
        "task_1_4_grad_accumulation_code", "        for k in range(accum_steps):\n",
        "        for k in range(accum_steps):\n            opt.zero_grad()\n", "task_1_4_grad_accumulation"),
    "zero: reduce-scattered gradient summed, not averaged": (
        "task_2_1_sharded_adam_code", "        g /= self.world_size\n", "", "task_2_1_sharded_adam"),
    "zero: full optimizer state on every rank": (
        "task_2_1_sharded_adam_code",
        "self.state = {\"exp_avg\": torch.zeros(self.chunk), \"exp_avg_sq\": torch.zeros(self.chunk)}",
        "self.state = {\"exp_avg\": torch.zeros(self.chunk), \"exp_avg_sq\": torch.zeros(self.chunk),\n"
        "                      \"full\": torch.zeros(2 * total)}", "task_2_1_sharded_adam"),
    "zero: no bias correction": (
        "task_2_1_sharded_adam_code", "denom = (v.sqrt() / math.sqrt(1 - b2 ** self.step_count)).add_(self.eps)\n"
        "        mine.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.step_count))",
        "denom = v.sqrt().add_(self.eps)\n        mine.addcdiv_(m, denom, value=-self.lr)", "task_2_1_sharded_adam"),
    "zero: eps inside the square root": (
        "task_2_1_sharded_adam_code", "denom = (v.sqrt() / math.sqrt(1 - b2 ** self.step_count)).add_(self.eps)",
        "denom = (v / (1 - b2 ** self.step_count) + self.eps).sqrt()", "task_2_1_sharded_adam"),
    "gpipe: micro-batch losses not divided by n_micro": (
        "task_3_1_gpipe_code", "loss = F.mse_loss(outputs[i], micro_t[i]) / n_micro",
        "loss = F.mse_loss(outputs[i], micro_t[i])", "task_3_1_gpipe"),
    "gpipe: returns the last micro-batch's loss": (
        "task_3_1_gpipe_code", "            total += loss.item()", "            total = loss.item()", "task_3_1_gpipe"),
    "gpipe: backward in forward order, without the matching gradients": (
        "task_3_1_gpipe_code", "            dist.recv(grad, src=rank + 1)\n            outputs[i].backward(grad)",
        "            dist.recv(grad, src=rank + 1)\n            outputs[n_micro - 1 - i].backward(grad)",
        "task_3_1_gpipe"),
    "bubble: p and m swapped": (
        "task_3_2_bubble_code", "return (p - 1) / (m + p - 1)", "return (m - 1) / (m + p - 1)", "task_3_2_bubble"),
    "bubble: T is the mean elapsed time": (
        "task_3_2_bubble_code", "makespan = max(elapsed for elapsed, _ in timings)",
        "makespan = sum(elapsed for elapsed, _ in timings) / len(timings)", "task_3_2_bubble"),
    "bubble: stage costs per step used per sample": (
        "task_3_2_bubble_code", "hd.make_pipeline_stages(world_size, width, seed, fwd_s / batch, bwd_s / batch)",
        "hd.make_pipeline_stages(world_size, width, seed, fwd_s / n_micro, bwd_s / n_micro)", "task_3_2_bubble"),
    "bubble: naive schedule (each micro-batch forward and backward in turn)": (
        "task_3_2_bubble_code", "    gpipe_step(stage, x, target, n_micro, rank, world_size)\n",
        "    for xm, tm in zip(x.split(batch // n_micro), target.split(batch // n_micro)):\n"
        "        gpipe_step(stage, xm, tm, 1, rank, world_size)\n", "task_3_2_bubble"),
    "column-parallel: keeps the full weight": (
        "task_4_1_parallel_linear_code",
        "        self.weight = nn.Parameter(full.weight.detach()[rank * k:(rank + 1) * k].clone())",
        "        self.full_weight = nn.Parameter(full.weight.detach().clone(), requires_grad=False)\n"
        "        self.weight = nn.Parameter(self.full_weight[rank * k:(rank + 1) * k].clone())",
        "task_4_1_parallel_linear"),
    "row-parallel: bias added on every rank before the sum": (
        "task_4_1_parallel_linear_code",
        "        y = F.linear(x, self.weight)\n        dist.all_reduce(y)                  # sum of the partial products\n"
        "        return y if self.bias is None else y + self.bias",
        "        y = F.linear(x, self.weight, self.bias)\n        dist.all_reduce(y)\n        return y",
        "task_4_1_parallel_linear"),
    "row-parallel: full input not sliced": (
        "task_4_1_parallel_linear_code", "            x = x[..., self.rank * self.k:(self.rank + 1) * self.k]",
        "            x = x[..., :self.k]", "task_4_1_parallel_linear"),
    "tp: f without the backward all-reduce": (
        "task_4_2_tp_autograd_code", "        grad = grad.clone()\n        dist.all_reduce(grad)\n        return grad",
        "        return grad", "task_4_2_tp_autograd"),
    "tp: g all-reduces in backward too": (
        "task_4_2_tp_autograd_code", "    def backward(ctx, grad):\n        ### BEGIN SOLUTION\n        return grad",
        "    def backward(ctx, grad):\n        ### BEGIN SOLUTION\n        grad = grad.clone()\n"
        "        dist.all_reduce(grad)\n        return grad", "task_4_2_tp_autograd"),
    "tp: b2 added before the reduction": (
        "task_4_2_tp_autograd_code", "return ReduceFromTensorParallel.apply(F.linear(h, w2)) + b2",
        "return ReduceFromTensorParallel.apply(F.linear(h, w2, b2))", "task_4_2_tp_autograd"),
}

_FLAT_ALLREDUCE = (
    "    grads = [p.grad for p in model.parameters() if p.grad is not None]\n"
    "    flat = torch.cat([g.reshape(-1) for g in grads])\n"
    "    dist.all_reduce(flat)\n"
    "    flat /= world_size\n"
    "    offset = 0\n"
    "    for g in grads:\n"
    "        g.copy_(flat[offset:offset + g.numel()].view_as(g))\n"
    "        offset += g.numel()\n"
    "    return\n")

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "all-reduce: one all-reduce of the flattened gradients": (
        "task_1_1_allreduce_gradients_code", "    for p in model.parameters():\n        if p.grad is not None:",
        _FLAT_ALLREDUCE + "    for p in model.parameters():\n        if p.grad is not None:",
        "task_1_1_allreduce_gradients"),
    "all-reduce on a clone, the average assigned as a new .grad": (
        "task_1_1_allreduce_gradients_code",
        "            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)\n            p.grad /= world_size",
        "            g = p.grad.clone()\n            dist.all_reduce(g)\n            p.grad = g / world_size",
        "task_1_1_allreduce_gradients"),
    "dp: one process-wide shard index, SGD built with momentum=0": (
        "task_1_2_dp_train_code", "    opt = torch.optim.SGD(model.parameters(), lr=lr)\n    local = batch_size // world_size",
        "    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)\n"
        "    local = batch_size // world_size\n"
        "    data = data.view(steps, world_size, local, -1)[:, rank].reshape(steps * local, -1)\n"
        "    targets = targets.view(steps, world_size, local, -1)[:, rank].reshape(steps * local, -1)\n"
        "    history = []\n"
        "    for s in range(steps):\n"
        "        opt.zero_grad()\n"
        "        F.mse_loss(model(data[s * local:(s + 1) * local]), targets[s * local:(s + 1) * local]).backward()\n"
        "        allreduce_gradients(model, world_size)\n"
        "        opt.step()\n"
        "        history.append([p.detach().clone() for p in model.parameters()])\n"
        "    return history",
        "task_1_2_dp_train"),
    "buckets: written back with torch's unflatten helper, as new .grad tensors": (
        "task_1_3_bucketed_allreduce_code",
        "            offset = 0\n"
        "            for q in self.buckets[i]:\n"
        "                q.grad.copy_(flat[offset:offset + q.numel()].view_as(q))\n"
        "                offset += q.numel()\n",
        "            parts = torch._utils._unflatten_dense_tensors(flat, [q.grad for q in self.buckets[i]])\n"
        "            for q, part in zip(self.buckets[i], parts):\n"
        "                q.grad = part.clone()\n",
        "task_1_3_bucketed_allreduce"),
    "accumulation: one all-reduce of the flattened gradients (not allreduce_gradients)": (
        "task_1_4_grad_accumulation_code", "        allreduce_gradients(model, world_size)\n",
        "        grads = [p.grad for p in model.parameters()]\n"
        "        flat = torch.cat([g.reshape(-1) for g in grads])\n"
        "        dist.all_reduce(flat)\n"
        "        flat /= world_size\n"
        "        offset = 0\n"
        "        for g in grads:\n"
        "            g.copy_(flat[offset:offset + g.numel()].view_as(g))\n"
        "            offset += g.numel()\n",
        "task_1_4_grad_accumulation"),
    "accumulation through an allreduce_gradients that flattens (one all-reduce per step)": (
        "task_1_1_allreduce_gradients_code", "    for p in model.parameters():\n        if p.grad is not None:",
        _FLAT_ALLREDUCE + "    for p in model.parameters():\n        if p.grad is not None:",
        "task_1_4_grad_accumulation"),
    "accumulation: loss summed over micro-batches, one backward per micro-batch via mean": (
        "task_1_4_grad_accumulation_code",
        "            loss = F.mse_loss(model(data[lo:lo + micro]), targets[lo:lo + micro]) / accum_steps\n"
        "            loss.backward()",
        "            out = model(data[lo:lo + micro])\n"
        "            (((out - targets[lo:lo + micro]) ** 2).mean() * (1.0 / accum_steps)).backward()",
        "task_1_4_grad_accumulation"),
    "zero: torch's own Adam on this rank's chunk": (
        "task_2_1_sharded_adam_code",
        "        self.step_count += 1\n"
        "        (b1, b2), m, v = self.betas, self.state[\"exp_avg\"], self.state[\"exp_avg_sq\"]\n"
        "        m.mul_(b1).add_(g, alpha=1 - b1)\n"
        "        v.mul_(b2).addcmul_(g, g, value=1 - b2)\n"
        "        denom = (v.sqrt() / math.sqrt(1 - b2 ** self.step_count)).add_(self.eps)\n"
        "        mine.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.step_count))\n",
        "        self.step_count += 1\n"
        "        with torch.enable_grad():\n"
        "            leaf = torch.nn.Parameter(mine)\n"
        "            adam = torch.optim.Adam([leaf], lr=self.lr, betas=self.betas, eps=self.eps)\n"
        "            if self.step_count > 1:\n"
        "                adam.state[leaf] = {\"step\": torch.tensor(float(self.step_count - 1)),\n"
        "                                    \"exp_avg\": self.state[\"exp_avg\"], \"exp_avg_sq\": self.state[\"exp_avg_sq\"]}\n"
        "            leaf.grad = g\n"
        "            adam.step()\n"
        "            self.state[\"exp_avg\"], self.state[\"exp_avg_sq\"] = adam.state[leaf][\"exp_avg\"], adam.state[leaf][\"exp_avg_sq\"]\n"
        "            mine = leaf.detach()\n",
        "task_2_1_sharded_adam"),
    "gpipe: micro-batches by chunk()": (
        "task_3_1_gpipe_code", "    micro_x = x.split(x.shape[0] // n_micro)\n    micro_t = target.split(target.shape[0] // n_micro)",
        "    micro_x = x.chunk(n_micro)\n    micro_t = target.chunk(n_micro)", "task_3_1_gpipe"),
    "gpipe: blocking sends of the activations": (
        "task_3_1_gpipe_code", "            sends.append((dist.isend(act, dst=rank + 1), act))",
        "            dist.send(act, dst=rank + 1)", "task_3_1_gpipe"),
    "bubble: bubble from busy fractions": (
        "task_3_2_bubble_code", "    makespan = max(elapsed for elapsed, _ in timings)\n"
        "    return 1.0 - sum(busy for _, busy in timings) / (len(timings) * makespan)",
        "    T = max(t[0] for t in timings)\n    return sum(1 - b / T for _, b in timings) / len(timings)",
        "task_3_2_bubble"),
    "parallel linear: column shard by chunk()": (
        "task_4_1_parallel_linear_code",
        "        self.weight = nn.Parameter(full.weight.detach()[rank * k:(rank + 1) * k].clone())",
        "        self.weight = nn.Parameter(full.weight.detach().chunk(world_size, dim=0)[rank].clone())",
        "task_4_1_parallel_linear"),
    "tp: g's forward on a fresh buffer": (
        "task_4_2_tp_autograd_code", "        y = x.clone()\n        dist.all_reduce(y)\n        return y",
        "        y = torch.empty_like(x).copy_(x)\n        dist.all_reduce(y, op=dist.ReduceOp.SUM)\n        return y",
        "task_4_2_tp_autograd"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
