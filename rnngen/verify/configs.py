"""The configuration matrices of ``rnngen verify``: which options, shapes and layer settings
each check runs (see :mod:`rnngen.verify`)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from ..spec import CellSpec

#: activations whose derivative is smooth everywhere (finite differences are meaningful)
SMOOTH = ("tanh", "sigmoid", "softsign", "softplus", "linear", "exponential", "selu", "elu")
SMOOTH += ("silu", "gelu", "mish", "squareplus", "log_sigmoid", "tanh_shrink")  # input-form ones

#: the shipped specs that mirror a Keras layer: Keras class name -> spec name (``spec/<name>.yaml``,
#: ``generated/<name>_numpy.py``)
SHIPPED = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}


# -- configurations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    options: tuple  # ((name, value), ...)
    B: int = 3
    T: int = 6
    D: int = 4
    U: int = 5
    return_sequences: bool = True
    return_state: bool = True
    go_backwards: bool = False
    mask: bool = False
    zero_output_for_mask: bool = False
    initial_state: bool = False
    stateful: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    regularizers: bool = False
    unroll: bool = False

    @property
    def opts(self) -> dict:
        return dict(self.options)

    def label(self, defaults: dict | None = None) -> str:
        parts = [f"B={self.B} T={self.T} D={self.D} U={self.U}"]
        for k, v in self.options:
            if defaults is None or defaults.get(k) != v:
                parts.append(f"{k}={v}")
        base = Config(options=self.options)
        for f in dataclasses.fields(self):
            if f.name in ("options", "B", "T", "D", "U"):
                continue
            v = getattr(self, f.name)
            if v != getattr(base, f.name):
                parts.append(f"{f.name}={v}")
        return " ".join(parts)

    def size(self, defaults: dict | None = None) -> tuple:
        """Sort key for "smallest": tensor sizes, then how many settings differ from defaults."""
        base = Config(options=self.options)
        changed = sum(
            getattr(self, f.name) != getattr(base, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("options", "B", "T", "D", "U")
        )
        changed += sum(defaults.get(k) != v for k, v in self.options) if defaults else 0
        return (self.B * self.T * max(self.U, self.D), changed, self.label())


def all_features(options: tuple, **extra) -> Config:
    """A configuration that turns on masks with gaps, ``go_backwards``, initial states and both
    dropouts at once (the finite-difference and truncation checks' hardest case)."""
    return Config(
        options,
        mask=True,
        go_backwards=True,
        initial_state=True,
        dropout=0.3,
        recurrent_dropout=0.4,
        **extra,
    )


def _alternative(opt) -> str:
    for name in ("sigmoid", "tanh", "softsign", "linear"):
        if name != opt.default and name in opt.values:
            return name
    return opt.default


def configurations(cs: CellSpec, quick: bool = False) -> list[Config]:
    """The configuration matrix for the ``keras`` and ``autodiff`` checks."""
    defaults = cs.defaults()
    base = tuple(defaults.items())

    def with_opts(**kw):
        return tuple({**defaults, **kw}.items())

    out = [Config(base)]
    acts = cs.activation_options
    if quick:
        if acts:
            out.append(Config(with_opts(**{o.name: _alternative(o) for o in acts})))
            # a value without an output form runs the input-form twin of the variants
            if "gelu" in acts[0].values and acts[0].default != "gelu":
                out.append(Config(with_opts(**{acts[0].name: "gelu"})))
    else:
        for o in acts:
            for v in o.values:
                if v != o.default:
                    out.append(Config(with_opts(**{o.name: v}), T=4))
    bools = [o.name for o in cs.bool_options]
    for combo in itertools.product((True, False), repeat=len(bools)):
        opts = dict(zip(bools, combo, strict=True))
        if any(opts[k] != defaults[k] for k in bools):
            if quick and sum(opts[k] != defaults[k] for k in bools) > 1:
                continue
            out.append(Config(with_opts(**opts)))
    rest = [
        Config(base, mask=True, initial_state=True),
        Config(base, mask=True, go_backwards=True, zero_output_for_mask=True, initial_state=True),
        Config(base, stateful=True, mask=True),
        Config(base, dropout=0.3, recurrent_dropout=0.4, initial_state=True),
        Config(base, regularizers=True),
    ]
    if not quick:
        rest += [
            Config(base, return_sequences=False, return_state=False),
            Config(base, return_sequences=False, return_state=True),
            Config(base, return_sequences=True, return_state=False, initial_state=True),
            Config(base, go_backwards=True),
            Config(base, mask=True, zero_output_for_mask=True),
            Config(base, mask=True, go_backwards=True, initial_state=True),
            Config(base, mask=True, return_sequences=False, zero_output_for_mask=True),
            Config(base, stateful=True, go_backwards=True, return_state=False),
            Config(base, dropout=0.3),
            Config(base, recurrent_dropout=0.4),
            Config(base, dropout=0.3, recurrent_dropout=0.4, mask=True, go_backwards=True),
            Config(base, regularizers=True, return_sequences=False, return_state=False),
            Config(base, regularizers=True, mask=True, return_state=True),
            Config(base, unroll=True, mask=True, initial_state=True),
            Config(base, T=40, B=2, mask=True, initial_state=True),
        ]
        for combo in itertools.product((True, False), repeat=len(bools)):
            opts = dict(zip(bools, combo, strict=True))
            if any(opts[k] != defaults[k] for k in bools):
                rest.append(
                    Config(
                        with_opts(**opts),
                        mask=True,
                        dropout=0.3,
                        recurrent_dropout=0.4,
                        regularizers=True,
                        initial_state=True,
                    )
                )
    return out + rest


def declared_dropout(cs: CellSpec, cfgs: list[Config]) -> list[Config]:
    """Drop the dropout rates a spec declares no mask for; keep each configuration once."""
    declared = {rate for _, rate in cs.dropout}
    out: list[Config] = []
    for cfg in cfgs:
        cfg = dataclasses.replace(
            cfg,
            dropout=cfg.dropout if "dropout" in declared else 0.0,
            recurrent_dropout=cfg.recurrent_dropout if "recurrent_dropout" in declared else 0.0,
        )
        if cfg not in out:
            out.append(cfg)
    return out


def fd_configurations(cs: CellSpec, quick: bool = False) -> list[Config]:
    """Smooth activations only (finite differences are meaningless at kinks)."""
    defaults = cs.defaults()
    smooth = {o.name: (o.default if o.default in SMOOTH else "tanh") for o in cs.activation_options}
    base = tuple({**defaults, **smooth}.items())
    out = [Config(base, initial_state=True), all_features(base)]
    bools = [o.name for o in cs.bool_options]
    for combo in itertools.product((True, False), repeat=len(bools)):
        opts = dict(zip(bools, combo, strict=True))
        if any(opts[k] != defaults[k] for k in bools):
            out.append(
                Config(
                    tuple({**dict(base), **opts}.items()),
                    mask=True,
                    zero_output_for_mask=True,
                    initial_state=True,
                    dropout=0.3,
                    recurrent_dropout=0.4,
                )
            )
            if quick:
                break
    if not quick:
        for o in cs.activation_options:
            for v in o.values:
                if v in SMOOTH and v != dict(base)[o.name]:
                    out.append(
                        Config(tuple({**dict(base), o.name: v}.items()), T=4, initial_state=True)
                    )
        out.append(Config(base, mask=True, zero_output_for_mask=False, initial_state=True))
    return out
