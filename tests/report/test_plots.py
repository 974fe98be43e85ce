from evals.plots import _colours


def test_every_row_gets_its_own_colour_even_past_ten():
    for n in (3, 10, 12, 20):
        labels = [f"optimizer-{i}" for i in range(n)]
        colours = _colours(labels + labels[:2])  # repeated labels share their colour
        assert len(colours) == n and len(set(colours.values())) == n
