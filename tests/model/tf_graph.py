"""A small, independent evaluator of a frozen TensorFlow GraphDef (NHWC) written with torch functional ops.

Test oracle for the FaceNet conversion: it runs the graph node by node, with no knowledge of our module tree.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def run_graph(graph, consts: dict, feeds: dict, output: str) -> torch.Tensor:
    nodes = {n.name: n for n in graph.node}
    cache: dict[str, torch.Tensor] = {}

    def ev(name: str) -> torch.Tensor:
        name = name.split(":")[0].lstrip("^")
        if name in cache:
            return cache[name]
        n = nodes[name]
        ins = [i for i in n.input if not i.startswith("^")]
        op = n.op
        if op == "Placeholder":
            v = feeds[name]
        elif op == "Const":
            v = torch.from_numpy(np.array(consts[name]))
        elif op == "Conv2D":
            x, w = ev(ins[0]), ev(ins[1])
            s = list(n.attr["strides"].list.i)[1]
            kh, kw = w.shape[0], w.shape[1]
            x = _nchw(x)
            if n.attr["padding"].s == b"SAME":
                ph, pw = _same_pad(x.shape[2], kh, s), _same_pad(x.shape[3], kw, s)
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
            v = _nhwc(F.conv2d(x, w.permute(3, 2, 0, 1), stride=s))
        elif op == "BiasAdd" or op == "Add":
            v = ev(ins[0]) + ev(ins[1])
        elif op == "Mul":
            v = ev(ins[0]) * ev(ins[1])
        elif op == "Relu":
            v = torch.relu(ev(ins[0]))
        elif op == "ConcatV2":
            v = torch.cat([ev(i) for i in ins[:-1]], dim=int(ev(ins[-1])))
        elif op in ("MaxPool", "AvgPool"):
            k, s = list(n.attr["ksize"].list.i)[1], list(n.attr["strides"].list.i)[1]
            assert n.attr["padding"].s == b"VALID"
            fn = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
            v = _nhwc(fn(_nchw(ev(ins[0])), k, s))
        elif op == "Reshape":
            shape = [int(d) for d in ev(ins[1]).tolist()]
            v = ev(ins[0]).reshape(shape)
        elif op == "MatMul":
            v = ev(ins[0]) @ ev(ins[1])
        elif op == "FusedBatchNorm":
            x, g, b, m, var = (ev(i) for i in ins)
            v = (x - m) / torch.sqrt(var + n.attr["epsilon"].f) * g + b
        elif op == "Square":
            v = ev(ins[0]) ** 2
        elif op == "Sum":
            v = ev(ins[0]).sum(dim=int(ev(ins[1])), keepdim=n.attr["keep_dims"].b)
        elif op == "Maximum":
            v = torch.maximum(ev(ins[0]), ev(ins[1]))
        elif op == "Rsqrt":
            v = torch.rsqrt(ev(ins[0]))
        else:
            raise NotImplementedError(op)
        cache[name] = v
        return v

    with torch.no_grad():
        return ev(output)
