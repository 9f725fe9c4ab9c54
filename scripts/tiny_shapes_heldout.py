"""The held-out evaluation set of tiny-shapes, fixed before the model was trained.

Two parts, both judged by scripts/eval_tiny_shapes.py:

- `combination_prompts`: 24 (shape, colour, background) combinations that the training set
  never draws (train_tiny_shapes.py refuses them), worded the way the training captions are.
  They test composition: every word is known, the combination is not.
- `paraphrase_prompts`: the same 24 combinations, worded with words and sentence forms the
  training captions never use (train_tiny_shapes.py asserts that none of `UNSEEN_WORDS` ever
  appears in a caption). They test that the text encoder carries the meaning over.

Nothing here may be changed to suit a trained model: the figures are only honest if this
file is older than the weights it judges (see git log).
"""

SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]


def held_out_combinations():
    """24 (shape, colour, background) triples: each shape 4 times, each colour 3 times as
    the shape's and 3 times as the background's."""
    triples = []
    for i in range(24):
        shape = SHAPES[i % 6]
        colour = COLOURS[i % 8]
        background = COLOURS[(i + 1 + 2 * (i // 8)) % 8]
        triples.append((shape, colour, background))
    assert len(set(triples)) == 24 and all(c != b for _, c, b in triples)
    return triples


# Words the training captions never contain (train_tiny_shapes.py checks every caption).
UNSEEN_COLOUR_WORDS = {
    "red": ["crimson", "ruby"],
    "green": ["jade", "lime"],
    "blue": ["navy", "azure"],
    "yellow": ["lemon", "canary"],
    "white": ["ivory", "milky"],
    "black": ["ebony", "coal"],
    "orange": ["amber", "pumpkin"],
    "purple": ["lavender", "plum"],
}
UNSEEN_SHAPE_WORDS = {
    "circle": ["disc", "orb"],
    "square": ["tile", "cube"],
    "triangle": ["wedge", "pyramid"],
    "star": ["starburst", "pentagram"],
    "ring": ["donut", "halo"],
    "cross": ["crucifix", "cruciform"],
}
# Sentence forms the captions never use ({obj} is "a crimson disc", {bg} a colour word).
UNSEEN_FORMS = [
    "{obj} sitting on a {bg} field",
    "a {bg} canvas showing {obj}",
    "picture of {obj}; the backdrop colour is {bg}",
    "{obj} resting upon {bg} paper",
    "draw {obj} on {bg}",
    "{bg} surface, {obj} in front",
]
# A second paraphrase set, written on 2026-12-02 after the first training's result on the
# first set was seen and before the second training (see models/tiny-shapes/README.md): new
# words and forms, so that one set stays untouched by what was learnt from the other.
UNSEEN_COLOUR_WORDS_2 = {
    "red": ["cardinal", "garnet"],
    "green": ["malachite", "clover"],
    "blue": ["sapphire", "cerulean"],
    "yellow": ["banana", "daffodil"],
    "white": ["alabaster", "porcelain"],
    "black": ["obsidian", "sable"],
    "orange": ["apricot", "papaya"],
    "purple": ["orchid", "aubergine"],
}
UNSEEN_SHAPE_WORDS_2 = {
    "circle": ["spot", "bubble"],
    "square": ["rectangle", "quadrilateral"],
    "triangle": ["delta", "arrowhead"],
    "star": ["pentacle", "starlike shape"],
    "ring": ["doughnut", "annulus"],
    "cross": ["greek cross", "intersection"],
}
UNSEEN_FORMS_2 = [
    "{obj} floating in {bg} space",
    "{bg} wallpaper with {obj} printed on it",
    "photo: {obj} laid on a {bg} tablecloth",
    "{obj} atop {bg} cardboard",
    "imagine {obj} over {bg}",
    "a {bg} poster featuring {obj}",
]
# A third paraphrase set, written on 2026-12-02 at the start of the session that rebuilt the
# text side (before any of its code or weights existed; see git log): nothing learnt from
# sets 1 and 2 went into choosing these, and no training change may be judged on them first.
UNSEEN_COLOUR_WORDS_3 = {
    "red": ["raspberry", "carmine"],
    "green": ["fern", "shamrock"],
    "blue": ["denim", "ocean"],
    "yellow": ["saffron", "primrose"],
    "white": ["linen", "frost"],
    "black": ["raven", "soot"],
    "orange": ["mandarin", "clementine"],
    "purple": ["mauve", "mulberry"],
}
UNSEEN_SHAPE_WORDS_3 = {
    "circle": ["coin", "ball"],
    "square": ["quadrangle", "tablet"],
    "triangle": ["spike", "cone"],
    "star": ["sparkle", "asterisk"],
    "ring": ["loop", "bagel"],
    "cross": ["crosshair", "crossmark"],
}
UNSEEN_FORMS_3 = [
    "{obj} stamped onto {bg} card",
    "{obj}, and behind it everything is {bg}",
    "an illustration where {obj} sits over {bg} felt",
    "{bg} fabric under {obj}",
    "sketch {obj}; fill the rest with {bg}",
    "my logo is {obj} on solid {bg}",
]
UNSEEN_WORDS = sorted(
    {w for words in UNSEEN_COLOUR_WORDS.values() for w in words}
    | {w for words in UNSEEN_SHAPE_WORDS.values() for w in words}
    | {"field", "canvas", "picture", "resting", "upon", "paper", "draw", "surface", "sitting",
       "showing"}
    | {w for words in UNSEEN_COLOUR_WORDS_2.values() for w in words}
    | {w for words in UNSEEN_SHAPE_WORDS_2.values() for w in words if " " not in w}
    | {"starlike", "greek", "floating", "space", "wallpaper", "printed", "photo", "laid",
       "tablecloth", "atop", "cardboard", "imagine", "poster", "featuring"}
    | {w for words in UNSEEN_COLOUR_WORDS_3.values() for w in words}
    | {w for words in UNSEEN_SHAPE_WORDS_3.values() for w in words}
    | {"stamped", "onto", "card", "everything", "illustration", "sits", "felt", "fabric",
       "under", "sketch", "fill", "rest", "logo", "solid"}
)


def article(text):
    return "an" if text[0] in "aeiou" else "a"


def combination_prompts():
    """(prompt, shape, colour, background) in the training captions' wording."""
    forms = ["{a} {c} {s} on {ab} {b} background", "{a} {c} {s} against {ab} {b} backdrop",
             "{ab} {b} background with {a} {c} {s} on it"]
    prompts = []
    for i, (shape, colour, background) in enumerate(held_out_combinations()):
        text = forms[i % len(forms)].format(a=article(colour), c=colour, s=shape,
                                            ab=article(background), b=background)
        prompts.append((text, shape, colour, background))
    return prompts


PARAPHRASE_SETS = {
    1: (UNSEEN_COLOUR_WORDS, UNSEEN_SHAPE_WORDS, UNSEEN_FORMS),
    2: (UNSEEN_COLOUR_WORDS_2, UNSEEN_SHAPE_WORDS_2, UNSEEN_FORMS_2),
    3: (UNSEEN_COLOUR_WORDS_3, UNSEEN_SHAPE_WORDS_3, UNSEEN_FORMS_3),
}


def paraphrase_prompts(which=1):
    """(prompt, shape, colour, background) in wording the captions never use: an unseen form,
    and unseen words for the colour, the shape or both (`which`: the set, 1, 2 or 3)."""
    colours, shapes, forms = PARAPHRASE_SETS[which]
    prompts = []
    for i, (shape, colour, background) in enumerate(held_out_combinations()):
        colour_word = colours[colour][i % 2] if i % 3 != 2 else colour
        shape_word = shapes[shape][(i // 2) % 2] if i % 3 != 1 else shape
        background_word = colours[background][(i + 1) % 2]
        obj = f"{article(colour_word)} {colour_word} {shape_word}"
        text = forms[i % len(forms)].format(obj=obj, bg=background_word)
        prompts.append((text, shape, colour, background))
    return prompts


def form_prompts(which=1):
    """The paraphrase set's sentence forms with the captions' own colour and shape words: tells
    an unseen form from an unseen word. (A diagnostic added on 2026-12-02 after the third
    training; not a goal.)"""
    forms = PARAPHRASE_SETS[which][2]
    prompts = []
    for i, (shape, colour, background) in enumerate(held_out_combinations()):
        obj = f"{article(colour)} {colour} {shape}"
        prompts.append((forms[i % len(forms)].format(obj=obj, bg=background), shape, colour,
                        background))
    return prompts


SEEDS = [11, 12]

# A fixed half of the set, for a quick look (`eval_tiny_shapes.py --subset`); the Rust test
# renders and asserts the whole set.
TEST_SUBSET = list(range(0, 24, 2))
