"""Lift the layer calls of a torch.export program (``ExportedProgram.module()``: aten.conv2d / aten.linear /
aten.batch_norm on get_attr weights) back into nn.Conv / nn.Linear / nn.BatchNorm modules, so that
pruning, quantization and layer targeting by name work on a loaded .pt2 exactly as on an nn.Module."""

from __future__ import annotations

import torch
from torch import fx, nn

aten = torch.ops.aten


def _attr(gm: fx.GraphModule, node) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise TypeError("not a get_attr")
    return gm.get_parameter(str(node.target)) if _is_param(gm, node) else gm.get_buffer(str(node.target))


def _is_param(gm: fx.GraphModule, node: fx.Node) -> bool:
    try:
        gm.get_parameter(str(node.target))
        return True
    except AttributeError:
        return False


def _conv(args, dims: int) -> nn.Module:
    x, w, b, *rest = list(args) + [None] * (7 - len(args))
    stride, padding, dilation, groups = (rest + [None] * 4)[:4]
    layer_cls = nn.Conv1d if dims == 1 else nn.Conv2d
    groups = groups or 1
    layer = layer_cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride or 1,
                      padding=padding if padding is not None else 0, dilation=dilation or 1, groups=groups,
                      bias=b is not None)
    return layer


def lift_layers(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace aten layer calls whose weights are attributes by call_module nodes; returns ``gm``. A lifted
    layer takes the name of the module that owned its weights (``conv1``), so ``ignore:`` lists and reports
    use the names of the original model."""
    lifted: list[tuple[fx.Node, str]] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        try:
            if node.target in (aten.conv1d.default, aten.conv2d.default):
                w, b = _attr(gm, node.args[1]), _attr(gm, node.args[2] if len(node.args) > 2 else None)
                dims = 1 if node.target is aten.conv1d.default else 2
                module = _conv((None, w, b, *node.args[3:]), dims)
                weights = {"weight": w, "bias": b}
                inputs = (node.args[0],)
            elif node.target is aten.linear.default:
                w, b = _attr(gm, node.args[1]), _attr(gm, node.args[2] if len(node.args) > 2 else None)
                module = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
                weights = {"weight": w, "bias": b}
                inputs = (node.args[0],)
            elif node.target is aten.batch_norm.default and node.args[5] is False:
                w, b, mean, var = (_attr(gm, a) for a in node.args[1:5])
                rank = node.meta["val"].dim() if "val" in node.meta else 4
                module = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(
                    mean.shape[0], eps=node.args[7], momentum=node.args[6], affine=w is not None)
                weights = {"weight": w, "bias": b, "running_mean": mean, "running_var": var}
                inputs = (node.args[0],)
            else:
                continue
        except (TypeError, AttributeError, IndexError):
            continue  # weights computed in the graph, or an unusual signature: leave the op as it is
        with torch.no_grad():
            for key, value in weights.items():
                if value is not None:
                    getattr(module, key).copy_(value)
        module.eval()  # the program computed inference-mode batch norm
        owner = str(node.args[1].target).rpartition(".")[0] or node.name
        temporary = f"_lifted_{len(lifted)}"
        gm.add_submodule(temporary, module)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(temporary, inputs)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        lifted.append((new, owner))
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()  # frees the weight owners' names
    for new, owner in lifted:
        name = owner if not _taken(gm, owner) else str(new.target)
        if name != new.target:
            module = gm.get_submodule(str(new.target))
            gm.add_submodule(name, module)
            gm.delete_submodule(str(new.target))
            new.target = name
    gm.graph.lint()
    gm.recompile()
    return gm


def _taken(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
        return True
    except AttributeError:
        return False
