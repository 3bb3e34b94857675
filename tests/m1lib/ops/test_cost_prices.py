"""m1lib.ops.cost.prices: hand-computed costs, half-even rounding, the operator's price file."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.cli import main
from m1lib.errors import InputError, SettingsError
from m1lib.ops.cost.prices import (
    DEFAULT_MODEL_PRICES,
    PriceTable,
    event_micro_usd,
    load_prices,
    micro_to_usd,
    pusd_to_usd,
    round_micro,
)

SONNET, HAIKU, OPUS = "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- hand-computed costs -------------------------------------------------------------------------

HAND_COMPUTED = [
    # model, in, out, exact USD (worked by hand), micro-dollars rounded half-even
    (SONNET, 1234, 567, "0.012207", 12207),  # 1234*3/1e6 + 567*15/1e6 = 0.003702 + 0.008505
    (HAIKU, 1, 0, "0.000001", 1),  # 1 token at 1 USD per million
    (HAIKU, 0, 1, "0.000005", 5),
    (OPUS, 1_000_000, 1_000_000, "30", 30_000_000),  # 5 + 25
    (OPUS, 0, 0, "0", 0),
    (HAIKU, 200_000, 8_000, "0.24", 240_000),  # 0.2 + 0.04
    (SONNET, 10**12, 10**12, "18000000", 18 * 10**12),  # the largest counts: 3e6 + 15e6
]


@pytest.mark.parametrize(("model", "tokens_in", "tokens_out", "usd", "micro"), HAND_COMPUTED)
def test_default_prices_cost_hand_computed_cases(
    model: str, tokens_in: int, tokens_out: int, usd: str, micro: int
) -> None:
    pusd = load_prices().cost_pusd(model, tokens_in, tokens_out)
    assert pusd_to_usd(pusd) == Decimal(usd)
    assert round_micro(pusd) == micro


def test_default_table_is_the_issue_s() -> None:
    table = load_prices()
    given_prices = {
        name: (str(p.input_usd_per_mtok), str(p.output_usd_per_mtok))
        for name, p in table.models.items()
    }
    assert given_prices == {HAIKU: ("1", "5"), OPUS: ("5", "25"), SONNET: ("3", "15")}
    assert dict(DEFAULT_MODEL_PRICES) == given_prices
    assert table.tools == {}


def test_fractional_prices_cost_exactly() -> None:
    table = PriceTable(models={"m": ("0.80", "4.00")})
    # 1,234,567 * 0.8 = 987,653.6 µUSD; 89 * 4 = 356 µUSD; 988,009.6 µUSD in all
    pusd = table.cost_pusd("m", 1_234_567, 89)
    assert pusd_to_usd(pusd) == Decimal("0.9880096")
    assert round_micro(pusd) == 988_010  # .6 rounds up
    assert str(pusd_to_usd(pusd)) == "0.9880096"  # no trailing zeros, no exponent


# -- rounding: half-even to the micro-dollar -----------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "micro"),
    [(1, 0), (2, 1), (3, 2), (5, 2), (7, 4), (9, 4), (11, 6)],  # 0.5, 1, 1.5, 2.5, 3.5, 4.5, 5.5
)
def test_half_a_micro_dollar_rounds_to_even(tokens: int, micro: int) -> None:
    table = PriceTable(models={"half": ("0.5", "0")})
    assert round_micro(table.cost_pusd("half", tokens, 0)) == micro


def test_just_above_or_below_half_rounds_to_nearest() -> None:
    assert round_micro(500_001) == 1
    assert round_micro(499_999) == 0
    assert round_micro(2_500_001) == 3
    assert round_micro(1_499_999) == 1


@settings(deadline=None, max_examples=200)
@given(st.integers(min_value=0, max_value=10**25))
def test_round_micro_is_decimal_half_even(pusd: int) -> None:
    expected = (Decimal(pusd) / 10**6).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    assert round_micro(pusd) == int(expected)


@settings(deadline=None, max_examples=200)
@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_money_conversions_are_exact(units: int) -> None:
    assert Fraction(pusd_to_usd(units)) == Fraction(units, 10**12)
    assert Fraction(micro_to_usd(units)) == Fraction(units, 10**6)


@settings(deadline=None, max_examples=300)
@given(st.integers(min_value=0, max_value=2**52))
def test_an_event_s_float_gives_its_micro_dollars_back(micro: int) -> None:
    assert event_micro_usd(micro / 1e6) == micro


# -- unknown models, tools --------------------------------------------------------------------


def test_an_unknown_model_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(InputError) as caught:
        load_prices().cost_pusd("gpt-9", 1, 1)
    assert caught.value.path == "model"
    assert caught.value.allowed == [HAIKU, OPUS, SONNET]
    assert "'gpt-9' has no price" in str(caught.value)
    assert "M1_COST_PRICES_FILE" in str(caught.value)


def test_tool_prices_and_the_saving_of_a_hit() -> None:
    table = PriceTable(models={}, tools={"web_search": "0.01", "geo": 2})
    assert table.tool_call_price("web_search") == Decimal("0.01")
    assert table.hit_saving("web_search") == Decimal("0.01")
    assert table.hit_saving("geo") == Decimal(2)
    assert table.tool_call_price("free_tool") is None  # not a paid tool
    assert table.hit_saving("free_tool") == 0  # a hit saves no money there


# -- the operator's file -------------------------------------------------------------------------


def test_a_toml_file_overrides_and_adds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prices.toml",
        '[models.claude-sonnet-4-5]\ninput = "2.5"\noutput = 12.5\n'
        '[models."vendor/model.v2"]\ninput = 0.1\noutput = "0.000001"\n'
        '[tools]\nweb_search = "0.005"\nmaps = 1\n',
    )
    table = load_prices(path)
    assert set(table.models) == {HAIKU, OPUS, SONNET, "vendor/model.v2"}
    sonnet = table.models[SONNET]
    assert (sonnet.input_usd_per_mtok, sonnet.output_usd_per_mtok) == (
        Decimal("2.5"),
        Decimal("12.5"),
    )
    added = table.models["vendor/model.v2"]
    # TOML's 0.1 read as the decimal written, not the float 0.1000000000000000055...
    assert added.input_usd_per_mtok == Decimal("0.1")
    assert (added.input_pusd, added.output_pusd) == (100_000, 1)
    assert table.models[HAIKU].input_usd_per_mtok == 1  # untouched
    assert table.tools == {"maps": Decimal(1), "web_search": Decimal("0.005")}
    assert pusd_to_usd(table.cost_pusd(SONNET, 1234, 567)) == Decimal("0.0101725")
    assert str(path) in table.source


def test_a_json_file_overrides_and_adds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prices.JSON",
        '{"models": {"claude-opus-4-5": {"input": 4.5, "output": "22.5"},'
        ' "local": {"input": 0, "output": 0}}, "tools": {"ocr": 0.1}}',
    )
    table = load_prices(path)
    assert table.models[OPUS].input_usd_per_mtok == Decimal("4.5")
    assert table.cost_pusd("local", 10**6, 10**6) == 0
    assert table.tool_call_price("ocr") == Decimal("0.1")


BAD_FILES = [
    ("p.toml", '[models.x]\ninput = "abc"\noutput = "1"', "models.x.input: 'abc' is not a number"),
    ("p.toml", '[models.x]\ninput = "-1"\noutput = "1"', "models.x.input: '-1' is out of range"),
    ("p.toml", "[models.x]\ninput = 1\noutput = 2000000", "models.x.output: 2000000 is out of"),
    ("p.toml", "[models.x]\ninput = 0.0000001\noutput = 1", "more than 6 decimal places"),
    ("p.toml", "[models.x]\ninput = true\noutput = 1", "models.x.input: bool is not a price"),
    ("p.toml", "[models.x]\ninput = 1", "models.x.output: missing"),
    ("p.toml", "[models.x]\ninptu = 1\noutput = 1", "models.x.inptu: unknown; allowed: input"),
    ("p.toml", "[models]\nx = 3", "models.x: int is not a table"),
    ("p.toml", "models = 3", "models: int is not a table"),
    ("p.toml", "[prices]\nx = 1", "prices: unknown; allowed: models, tools"),
    ("p.toml", '[tools]\nweb = "nan"', "tools.web: 'nan' is not finite"),
    ("p.toml", '[tools]\nweb = "0.0000000000001"', "tools.web: '0.0000000000001' has more than 12"),
    ("p.toml", '[tools]\n"" = 1', 'tools."": not a name'),
    ("p.toml", '[tools]\n"a\\u0007b" = 1', "a control character (U+0007)"),
    ("p.toml", "[models.x\ninput = 1", "not valid TOML"),
    ("p.json", '{"tools": {"web": NaN}}', "NaN is not a price"),
    ("p.json", '{"tools": {"web": 1, "web": 2}}', "web: given twice"),
    ("p.json", "[1, 2]", "must be an object"),
    ("p.json", "{", "not valid JSON"),
    ("p.yaml", "models: {}", "the name ends in .yaml; allowed: .toml, .json"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES)
def test_a_bad_file_names_the_entry_and_the_problem(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(SettingsError) as caught:
        load_prices(path)
    message = str(caught.value)
    assert message.startswith(f"M1_COST_PRICES_FILE ({path}): "), message
    assert expected in message, message
    assert "Traceback" not in message


def test_a_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the file"):
        load_prices(tmp_path / "absent.toml")


# -- m1 cost prices ------------------------------------------------------------------------------


def test_cli_lists_the_effective_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, "p.toml", '[models.mine]\ninput = "0.25"\noutput = 1\n[tools]\nocr = 0.1'
    )
    monkeypatch.setenv("M1_COST_PRICES_FILE", str(path))
    assert main(["cost", "prices"]) == 0
    out = capsys.readouterr().out
    assert f"with M1_COST_PRICES_FILE ({path})" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert rows[SONNET] == ["3", "15"]
    assert rows["mine"] == ["0.25", "1"]
    assert rows["ocr"] == ["0.1"]


def test_cli_reports_a_bad_file_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "p.toml", '[models.x]\ninput = "1"\noutput = "lots"')
    monkeypatch.setenv("M1_COST_PRICES_FILE", str(path))
    assert main(["cost", "prices"]) == 2
    err = capsys.readouterr().err
    assert "models.x.output: 'lots' is not a number" in err
    assert "Traceback" not in err
