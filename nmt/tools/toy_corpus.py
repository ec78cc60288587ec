"""A generated English→French toy corpus with one reordering rule, small enough to train on in seconds.

``the [colour] noun verb the [colour] noun`` → ``le nom [couleur] verbe le nom [couleur]``: French puts the colour
after the noun, so even the toy task needs attention that does not simply run along the diagonal.
"""

from __future__ import annotations

import random
from pathlib import Path

from nmt.config import TextConfig


def _lexicon(pairs: str) -> dict[str, str]:
    return dict(pair.split(":") for pair in pairs.split())


_NOUNS = _lexicon(
    "cat:chat dog:chien bird:oiseau horse:cheval fish:poisson wolf:loup bear:ours fox:renard owl:hibou"
)
_COLOURS = _lexicon("red:rouge black:noir white:blanc green:vert blue:bleu grey:gris")
_VERBS = _lexicon("sees:voit follows:suit eats:mange likes:aime hears:entend bites:mord")


def _phrase(rng: random.Random) -> tuple[str, str]:
    """``the [colour] noun`` → ``le nom [couleur]``: French puts the colour after the noun."""
    noun = rng.choice(list(_NOUNS))
    if rng.random() < 0.5:
        return f"the {noun}", f"le {_NOUNS[noun]}"
    colour = rng.choice(list(_COLOURS))
    return f"the {colour} {noun}", f"le {_NOUNS[noun]} {_COLOURS[colour]}"


def synthetic_pair(rng: random.Random) -> tuple[str, str]:
    """One to three clauses ``phrase verb phrase`` joined by ``and`` / ``et``."""
    en, fr = [], []
    for _ in range(rng.randint(1, 3)):
        (s_en, s_fr), (o_en, o_fr) = _phrase(rng), _phrase(rng)
        verb = rng.choice(list(_VERBS))
        en.append(f"{s_en} {verb} {o_en}")
        fr.append(f"{s_fr} {_VERBS[verb]} {o_fr}")
    return " and ".join(en), " et ".join(fr)


def write_synthetic_corpus(root: Path, n_train: int, seed: int = 0) -> TextConfig:
    """Write ``root/{train,dev,test}.{en,fr}`` (dev and test: ``n_train // 20`` pairs, at least 20)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_eval = max(n_train // 20, 20)
    for split, n in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        pairs = [synthetic_pair(rng) for _ in range(n)]
        for side, lang in enumerate(("en", "fr")):
            text = "".join(pair[side] + "\n" for pair in pairs)
            (root / f"{split}.{lang}").write_text(text, encoding="utf-8")
    return TextConfig(train=str(root / "train"), dev=str(root / "dev"), test=str(root / "test"))
