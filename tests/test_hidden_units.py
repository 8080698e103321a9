"""The hidden_units picture: every unit's line while they stay readable, else the strongest
units' lines only, with a caption that says which."""

import numpy as np
from helpers import cli, small_config, write_config

from mlpcli.visualize import (
    FONT,
    INK,
    MAX_LINES,
    canvas_for,
    caption,
    hidden_lines,
    hidden_units,
    strongest_units,
)

CORNERS = np.array([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])


def _ink(image):
    return (image == INK).all(axis=2)


def test_caption_writes_its_text_in_a_band_below_the_picture():
    picture = np.full((64, 256, 3), 200, np.uint8)
    text = "8 STRONGEST OF 64 UNITS"
    out = caption(picture, text)
    assert np.array_equal(out[:64], picture)  # the picture itself is untouched
    band = out[64:]
    assert band.shape == (5 * 2 + 2 * 3, 256, 3)
    # each font pixel is 2 x 2 image pixels of ink; the rest of the band is white
    assert _ink(band).sum() == 4 * sum(FONT[c].count("#") for c in text)
    assert (band[~_ink(band)] == 255).all()
    narrow = caption(picture[:, :40], text)  # cut at the picture's edge, never wider
    assert narrow.shape == (64 + 16, 40, 3)
    assert not np.array_equal(caption(picture, "ALL 3 UNITS"), caption(picture, "ALL 8 UNITS"))


def test_the_font_spells_every_caption():
    for h in (1, 3, MAX_LINES, 64, 1234567890):
        for text in (f"ALL {h} UNITS", f"ALL {h} UNIT", f"{MAX_LINES} STRONGEST OF {h} UNITS"):
            assert set(text) <= set(FONT), text
    assert all(
        len(glyph.split()) == 5 and {len(r) for r in glyph.split()} == {3}
        for glyph in FONT.values()
    )


def test_strongest_units_weigh_the_line_by_what_the_next_layer_makes_of_it():
    W0 = np.array([[1.0, 5.0, 0.1, 3.0], [0.0, 0.0, 0.0, 4.0]])  # |w_in| = 1, 5, 0.1, 5
    W1 = np.array([[9.0, 0.0], [0.1, 0.0], [100.0, 0.0], [1.0, 1.0]])  # |w_out| = 9, .1, 100, 1.41
    assert strongest_units(W0, W1, 2).tolist() == [0, 2]  # 9 and 10 beat 0.5 and 7.07
    assert strongest_units(W0, W1, 3).tolist() == [0, 2, 3]
    assert strongest_units(W0, W1, 4).tolist() == [0, 1, 2, 3]


def test_many_units_draw_only_the_strongest_lines_and_say_so():
    rng = np.random.default_rng(0)
    W0, b0, W1 = rng.normal(size=(2, 64)), rng.normal(size=64) * 0.1, rng.normal(size=(64, 2))
    canvas = canvas_for(CORNERS, size=96)
    white = np.full((96, 96, 3), 255, np.uint8)
    got = hidden_units(white, canvas, W0, b0, W1)
    keep = strongest_units(W0, W1, MAX_LINES)
    assert len(keep) == MAX_LINES
    lines = hidden_lines(white, canvas, W0[:, keep], b0[keep])
    assert np.array_equal(got, caption(lines, f"{MAX_LINES} STRONGEST OF 64 UNITS"))
    assert not np.array_equal(got[:96], hidden_lines(white, canvas, W0, b0))
    few = hidden_units(white, canvas, W0[:, :3], b0[:3], W1[:3])
    assert np.array_equal(
        few, caption(hidden_lines(white, canvas, W0[:, :3], b0[:3]), "ALL 3 UNITS")
    )


def test_a_training_run_logs_the_captioned_picture(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(train={"epochs": 1, "batch_size": 32})
    config["model"]["layers"][0]["units"] = 32
    path = write_config(tmp_path / "c.yaml", config)
    assert cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "r", "-q")[0] == 0
    events = EventAccumulator(str(tmp_path / "logs" / "r"), size_guidance={"images": 0})
    events.Reload()
    surface = events.Images("vis/decision_surface")[-1]
    lines = events.Images("vis/hidden_units")[-1]
    assert (lines.width, lines.height) == (surface.width, surface.height + 16)
