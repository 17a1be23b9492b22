"""The report's parts that need no run: listings from the live source, the cover's authors, the
figure-size check, the checklist's rows. The report of a real quick run is tested in
test_pipeline.py (byte-identical rebuilds, every figure at least 7 pt, the checklist's pages)."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from fashionlab.errors import ConfigError
from fashionlab.figures import pyplot
from fashionlab.pipeline import load_study_config
from fashionlab.pipeline.stages import STAGES
from fashionlab.report import ReportConfig, build_report, report_source
from fashionlab.report.config import DEFAULT_COURSE
from fashionlab.report.listings import (
    LISTINGS,
    Listing,
    listing_excerpt,
    listing_source,
    resolve,
)
from fashionlab.report.markup import TEXT_WIDTH_PT, string
from fashionlab.report.pdfinfo import (
    pdf_font_sizes,
    pdf_page_size,
    printed_text_sizes,
)
from pdf_pages import (
    blank_pages,
    checklist_entries,
    contents_entries,
    page_texts,
    small_text,
    span_in_pages,
    wrong_page_references,
)

plt = pyplot()
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.slow  # a subprocess (git config user.name)
def test_every_listing_shows_its_object_with_file_and_first_line(tmp_path: Path) -> None:
    source = report_source(tmp_path)  # an empty folder: every section says it has not run
    for item in LISTINGS:
        code, path, start = listing_source(item.target)
        # file:line points at the object's own first line in the file
        lines = (SRC / path).read_text().splitlines()
        name = item.target.rsplit(".", 1)[-1].split(":")[-1]
        header = lines[start - 1 :]
        first = next(line for line in header if not line.lstrip().startswith("@"))
        assert f"def {name}" in first or f"class {name}" in first, (item.target, first)
        # the same lines as inspect gives for the imported object
        got, first_line = inspect.getsourcelines(resolve(item.target))
        assert first_line == start and code == textwrap.dedent("".join(got)).rstrip()
        # the excerpt: the file's own lines under their own numbers, "..." where lines are left out
        numbers, excerpt, shown = listing_excerpt(item)
        assert shown == path and f"`{path}:{start}`" in source, item.target
        assert string(excerpt) in source, item.target
        indent = len(lines[start - 1]) - len(lines[start - 1].lstrip())
        for number, line in zip(numbers, excerpt.split("\n"), strict=True):
            if number is None:
                assert line.strip() == "...", (item.target, line)
            else:
                assert lines[number - 1][indent:] == line, (item.target, number)
        assert (
            numbers[0] == start
            and numbers == sorted(n for n in numbers if n is not None)
            or (
                [n for n in numbers if n is not None] == sorted(n for n in numbers if n is not None)
            )
        )
        assert '"""' not in excerpt and "raise ConfigError" not in excerpt, item.target
        assert "logger." not in excerpt, item.target


def test_the_listings_hold_the_code_a_grader_looks_for() -> None:
    shown = {item.target.split(":")[1]: listing_excerpt(item)[1] for item in LISTINGS}
    wanted = {  # the list: each piece of the assignment, in the code shown
        "MLP": ["nn.Linear", "kaiming_normal_", "def forward"],
        "StackedStep._loss_and_grads": ["torch.log_softmax", "F.nll_loss"],
        "StackedStep._update": ["g.addcmul_(self.l2, self.params)", "self.params.addcmul_"],
        "Population._train_epoch": ["self._loss_and_grads(x, y)", "self._update()"],
        "load_train_val": ["stratified_split"],
        "suggest_params": ["suggest_categorical", "suggest_float"],
        "Bracket._score": ["branch.train()", "evaluate(branch.model(member), self.val"],
        "promoted": ["max(1, len(values) // eta)"],
        "best_pair": ["value > best[2]"],
        "run_classifier": ["load_test", "evaluate("],
        "TrajectoryRecorder": ["parameters_to_vector"],
        "pca_plane": ["centred", "directions"],
        "_grid_with_margins": ["meshgrid", "evaluator.plane"],
        "_draw": ["plot_surface", "scatter"],
        "torchvision_loader": ["ToTensor()", "DataLoader("],
        "Autoencoder": ["nn.Sigmoid()", "def forward"],
        "train_autoencoder": ["nn.MSELoss()", "torch.optim.Adam", "train_epochs("],
        "train_epochs": ["model.train()", "loss_fn(", "loss.backward()", "optimizer.step()"],
        "reconstruction_figure": ["model.eval()", "model(x)"],
    }
    for name, needles in wanted.items():
        for needle in needles:
            assert needle in shown[name], (name, needle)


def test_an_excerpt_leaves_out_docstrings_checks_and_logging(tmp_path: Path) -> None:
    module = SRC / "fashionlab" / "_excerpt_probe.py"
    module.write_text(
        "import logging\n"
        "logger = logging.getLogger(__name__)\n"
        "\n"
        "def f(x):\n"
        '    """Doc."""\n'
        "    if x < 0:\n"
        "        raise ValueError(x)\n"
        "    logger.info('x %s', x)\n"
        "    y = x + 1\n"
        "    z = 2 * y\n"
        "    # why: w is z\n"
        "    w = z\n"
        "    return w\n"
    )
    try:
        keep = listing_excerpt(Listing("fashionlab._excerpt_probe:f", "", "p2"))
        assert keep[0] == [4, None, 9, 10, 11, 12, 13]
        assert keep[1].splitlines()[1] == "    ..."
        some = listing_excerpt(Listing("fashionlab._excerpt_probe:f", "", "p2", keep=("w",)))
        assert some[0] == [4, None, 11, 12, 13]  # the comment above a kept line stays with it
    finally:
        module.unlink()


def _git_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str | None) -> None:
    """Point git at a global config of our own (with ``name`` as user.name, or none)."""
    config = tmp_path / "gitconfig"
    config.write_text(f"[user]\n\tname = {name}\n" if name else "")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.mark.slow  # a subprocess (git config user.name)
def test_the_cover_names_the_authors_else_git_user_else_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _git_user(monkeypatch, tmp_path, "Grace Hopper")
    named = report_source(run, authors=["Ada Lovelace", "Alan Turing"])
    assert "Ada Lovelace · Alan Turing" in named and "Grace Hopper" not in named
    assert 'author: ("Ada Lovelace", "Alan Turing", )' in named  # the PDF's metadata too
    assert "Grace Hopper" in report_source(run)  # no names given: git's user.name
    _git_user(monkeypatch, tmp_path, None)
    nobody = report_source(run)
    assert "author: ()" in nobody and "--author" not in nobody and "missing" not in nobody
    with pytest.raises(ConfigError, match="non-empty"):
        ReportConfig(authors=("",))


@pytest.mark.slow  # a subprocess (git config user.name)
def test_the_cover_prints_the_course_line(tmp_path: Path) -> None:
    assert DEFAULT_COURSE in report_source(tmp_path).replace("\\", "")  # unescaped
    assert "CS 000, Homework 9" in report_source(tmp_path, course="CS 000, Homework 9")


def test_authors_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "study.toml"
    config.write_text('[report]\nauthors = ["Grace Hopper", "Edsger Dijkstra"]\n')
    study = load_study_config(config, quick=True)
    report = next(stage for stage in STAGES if stage.name == "report")
    assert report.resolve(study) == ReportConfig(
        authors=("Grace Hopper", "Edsger Dijkstra"), course=DEFAULT_COURSE
    )
    config.write_text('[report]\nauthors = "Grace Hopper"\n')
    with pytest.raises(ConfigError, match="authors"):
        load_study_config(config, quick=True)


@pytest.mark.slow  # a subprocess (pdftotext)
def test_page_references_name_the_page_their_heading_is_on(tmp_path: Path) -> None:
    # A folder with no results: every section says so, and the derivation, the listings and
    # the contents still span pages.
    (tmp_path / "run" / "heinit").mkdir(parents=True)
    pdf = build_report(tmp_path / "run", tmp_path / "report.pdf", authors=["A. Author"])
    entries = contents_entries(page_texts(pdf))
    assert len(entries) >= 6 and len({page for _, _, page in entries}) >= 3, entries
    assert len(checklist_entries(page_texts(pdf))) >= 8  # problem 1's rows (the rest: "—")
    assert wrong_page_references(pdf) == []
    assert blank_pages(pdf) == []
    assert small_text(pdf) == []  # the listings print at 7.5 pt


@pytest.mark.slow  # a subprocess (pdftotext)
def test_the_code_appendix_fills_at_most_four_pages(tmp_path: Path) -> None:
    # The budget for the code a grader reads: an appendix of at most 4 pages. The
    # listings are the same for every run (the live source), so a folder with no results shows
    # the same appendix as a default run.
    (tmp_path / "run" / "heinit").mkdir(parents=True)
    pdf = build_report(tmp_path / "run", tmp_path / "report.pdf", authors=["A. Author"])
    pages = span_in_pages(pdf, "Appendix: the code", "Appendix:")
    assert 2.5 < pages <= 4.0, f"the code appendix fills {pages:.2f} pages"


@pytest.mark.slow  # a subprocess (pdftotext)
def test_the_span_of_a_part_is_measured_in_pages_of_text_area(tmp_path: Path) -> None:
    import typst

    (tmp_path / "doc.typ").write_text(
        '#set page(paper: "a4", margin: 2cm)\nIntro\n#v(350pt)\nSTART\n#pagebreak()\n'
        "middle\n#pagebreak()\nEND\n\nSTOP here\n"
    )
    (tmp_path / "doc.pdf").write_bytes(typst.compile(str(tmp_path / "doc.typ")))
    # From START's top, ~368 pt down page 1's text area (Intro, paragraph spacing, 350 pt), to
    # the bottom of END, the line before STOP, ~10 pt down page 3's; a text area is
    # 841.89 - 2 * 56.69 = 728.5 pt high.
    expected = 2 + (10 - 368) / 728.5
    assert span_in_pages(tmp_path / "doc.pdf", "START", "STOP") == pytest.approx(expected, abs=0.02)
    assert span_in_pages(tmp_path / "doc.pdf", "START", "middle") < 0.02  # one line
    assert span_in_pages(tmp_path / "doc.pdf", "Intro", "nowhere") > 2  # to the end


def test_the_small_text_check_finds_raw_text_at_its_default_size(tmp_path: Path) -> None:
    import typst

    (tmp_path / "doc.typ").write_text(
        '#set text(size: 7.5pt)\n#raw("tiny = 1", block: true)\n'  # raw's 0.8 em: 6 pt
        '#show raw: set text(size: 7.5pt)\n#raw("fine = 2", block: true)\n'
    )
    (tmp_path / "doc.pdf").write_bytes(typst.compile(str(tmp_path / "doc.typ")))
    assert small_text(tmp_path / "doc.pdf") == [(1, 6.0, "tiny = 1")]


@pytest.mark.slow  # a subprocess (git config user.name)
def test_every_assignment_item_has_a_checklist_row(tmp_path: Path) -> None:
    source = report_source(tmp_path)
    items = ["1.1", "1.2", *(f"1.3 ({c})" for c in "abcde"), "2.1", "2.2", "2.3", "2.4"]
    items += ["3.1", "3.2", *(f"4, task {k}" for k in range(1, 5))]
    for item in items:
        assert f"[{item}]" in source.replace("\\", ""), item


def _figure(path: Path, width_in: float, label_pt: float) -> Path:
    fig, ax = plt.subplots(figsize=(width_in, 2.0))
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("a label", fontsize=label_pt)
    ax.tick_params(labelsize=8)
    # mathtext sets a subscript at 70 %: 10 pt gives a 7-pt subscript, which the check counts
    ax.set_title(r"mathtext $f_{\mathrm{CE}}$", fontsize=10)
    fig.savefig(path, bbox_inches=None)
    plt.close(fig)
    return path


def test_the_size_check_reads_the_text_sizes_of_a_figure(tmp_path: Path) -> None:
    small = _figure(tmp_path / "small.pdf", 5.0, 5.0)
    assert pdf_page_size(small) == pytest.approx((360.0, 144.0))
    assert min(pdf_font_sizes(small)) == pytest.approx(5.0)
    assert max(pdf_font_sizes(small)) == pytest.approx(10.0)
    assert 7.0 in [round(size, 3) for size in pdf_font_sizes(small)]  # the subscript


def test_the_size_check_fails_on_small_printed_text(tmp_path: Path) -> None:
    _figure(tmp_path / "small.pdf", 5.0, 5.0)  # a 5-pt label at its own size
    _figure(tmp_path / "fine.pdf", 5.0, 7.5)
    _figure(tmp_path / "wide.pdf", 13.4, 8.0)  # a 7-pt subscript, shrunk to the text width: ~3.5 pt
    source = (
        '#image("/small.pdf", width: 360.00pt)\n#image("/fine.pdf", width: 360pt)\n'
        '#image("/wide.pdf", width: 100%)\n#image("/plot.png", width: 80%)\n'
    )
    sizes = printed_text_sizes(source, tmp_path, TEXT_WIDTH_PT)
    assert sizes["/small.pdf"] == pytest.approx(5.0)
    assert sizes["/fine.pdf"] == pytest.approx(7.0)  # the title's subscript
    assert sizes["/wide.pdf"] == pytest.approx(7.0 * TEXT_WIDTH_PT / (13.4 * 72))
    assert sizes["/plot.png"] is None  # a raster figure's sizes are unknown: the check refuses it


def _ablation_run(tmp_path: Path, batchnorm_acc: float) -> Path:
    import json

    (tmp_path / "classifier").mkdir(parents=True, exist_ok=True)
    (tmp_path / "variant").mkdir(exist_ok=True)
    arms = {
        "plain": {"change": {}, "val_accuracy": 0.8936, "from_study": True},
        "batchnorm": {"change": {"batchnorm": True}, "val_accuracy": batchnorm_acc},
        "dropout": {"change": {"dropout": 0.2}, "val_accuracy": 0.8778},
    }
    ablation = {"arms": arms, "seeds": [17], "epochs": 18, "val_examples": 10000}
    plain = {"seeds": [0, 1, 2], "test_accuracy_std": 0.0014}
    plain["model"] = {"hidden_layers": 3, "units": 50, "activation": "relu"}
    variant = {"model": {"hidden_layers": 2, "units": 128, "activation": "leaky_relu"}}
    for name, doc in (
        ("classifier/ablation.json", ablation),
        ("classifier/test.json", plain),
        ("variant/test.json", variant),
    ):
        (tmp_path / name).write_text(json.dumps(doc))
    return tmp_path


def test_the_ablation_states_its_conclusion_from_the_printed_values(tmp_path: Path) -> None:
    from fashionlab.report.classifier import _ablation

    text = _ablation(_ablation_run(tmp_path / "a", 0.8935))  # -0.01 points: within the spread
    assert "neither BatchNorm nor Dropout alone" in text and "(0.14 points" in text
    assert "comes from its width and its activation (leaky\\_relu)" in text
    text = _ablation(_ablation_run(tmp_path / "b", 0.8990))  # +0.54 points: more than 0.14
    assert "batchnorm alone adds +0.54 points, more than the seeds' spread" in text


def test_the_report_says_plainly_when_the_hand_recipe_wins_on_validation(tmp_path: Path) -> None:
    from fashionlab.atomic import atomic_write_json
    from fashionlab.report.classifier import _comparison

    def folder(name: str, pick: float, hand: float) -> Path:
        run = tmp_path / name
        (run / "tune").mkdir(parents=True)
        atomic_write_json(run / "tune" / "best.json", {"epochs": 18, "val_acc": pick})
        atomic_write_json(run / "tune" / "reference.json", {"epochs": 18, "val_acc": hand})
        return run

    text = _comparison(folder("lost", 0.9027, 0.9069), "tune", "variant", "variant")
    assert "The hand recipe beats the variant search on validation* by 0.42 points" in text
    text = _comparison(folder("won", 0.8978, 0.8945), "tune", "classifier", "plain")
    assert "the plain search's pick scores 0.33 points above the hand recipe" in text
    assert "beats" not in text
