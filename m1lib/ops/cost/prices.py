"""The price table: what a model's tokens and a paid tool's calls cost, kept exact.

Why integers: a cost is summed over millions of calls and shown in reports; floats would drift and
round differently in every sum. A model price is given in USD per million tokens with at most 6
decimal places, so it is a whole number of pico-dollars (1e-12 USD) per token, and a call's cost,
``input_tokens * input + output_tokens * output``, is a whole number of pico-dollars: exact, and
exact in any sum. A paid tool's price is USD per call with at most 12 decimal places (whole
pico-dollars too). :func:`pusd_to_usd` turns pico-dollars into an exact :class:`~decimal.Decimal`;
:func:`round_micro` rounds them half-even (banker's rounding, unbiased over many events) to the
micro-dollar, the precision a ``cost_updates`` event carries.

The table is the built-in :data:`DEFAULT_MODEL_PRICES` plus the operator's ``M1_COST_PRICES_FILE``
(TOML or JSON by suffix), which overrides and adds::

    [models.claude-sonnet-4-5]          # or {"models": {"claude-sonnet-4-5": {...}}, ...} in JSON
    input = "3"                         # USD per million input tokens: text ("0.80") or a number
    output = "15"                       # USD per million output tokens
    [tools]
    web_search = "0.01"                 # USD per call of a paid tool

Numbers in the file are read as decimals (never through a float). A bad file is a
:class:`~m1lib.errors.SettingsError` naming the file, the entry and the problem. The process's
table is read once, on first use (:func:`default_prices`), and kept; an API replica or a test may
install its own (:func:`install_prices`).
"""

from __future__ import annotations

import json
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from m1lib.errors import InputError, SettingsError
from m1lib.text import TOOL_MAX, text_problem

__all__ = [
    "BUILT_IN",
    "DEFAULT_MODEL_PRICES",
    "DEFAULT_TOOL_PRICES",
    "MAX_PRICE_USD",
    "MICRO_PER_USD",
    "MODEL_MAX",
    "MODEL_PRICE_PLACES",
    "PICO_PER_USD",
    "TOOL_PRICE_PLACES",
    "ModelPrice",
    "PriceTable",
    "default_prices",
    "event_micro_usd",
    "hit_saving",
    "install_prices",
    "load_prices",
    "micro_to_usd",
    "pusd_to_usd",
    "round_micro",
    "tool_call_price",
]

PICO_PER_USD: Final = 10**12
MICRO_PER_USD: Final = 10**6
_PICO_PER_MICRO: Final = PICO_PER_USD // MICRO_PER_USD
MODEL_PRICE_PLACES: Final = 6  # USD per million tokens -> whole pico-dollars per token
TOOL_PRICE_PLACES: Final = 12  # USD per call -> whole pico-dollars per call
MAX_PRICE_USD: Final = Decimal(1_000_000)  # per million tokens, or per call: a typo, beyond it
MODEL_MAX: Final = 128  # characters of a model name (the cost_updates dimension)

DEFAULT_MODEL_PRICES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        # model: (USD per million input tokens, USD per million output tokens)
        "claude-haiku-4-5": ("1", "5"),
        "claude-sonnet-4-5": ("3", "15"),
        "claude-opus-4-5": ("5", "25"),
    }
)
DEFAULT_TOOL_PRICES: Final[Mapping[str, str]] = MappingProxyType({})
"""No built-in tool is paid; operators add theirs (USD per call) in ``M1_COST_PRICES_FILE``."""

BUILT_IN: Final = "built-in prices"
_FILE_KEYS: Final = ("models", "tools")
_MODEL_KEYS: Final = ("input", "output")
_PLAIN_KEY: Final = re.compile(r"^[A-Za-z0-9_.:-]+$")


# -- exact money ---------------------------------------------------------------------------------


def _scaled(units: int, places: int) -> Decimal:
    """``units * 10**-places`` as an exact Decimal without trailing zeros (no context rounding)."""
    if units == 0:
        return Decimal(0)
    while places > 0 and units % 10 == 0:
        units //= 10
        places -= 1
    sign = 1 if units < 0 else 0
    return Decimal((sign, tuple(int(digit) for digit in str(abs(units))), -places))


def pusd_to_usd(pusd: int) -> Decimal:
    """Pico-dollars as exact USD: ``pusd_to_usd(12_207_000_000) == Decimal("0.012207")``."""
    return _scaled(pusd, 12)


def micro_to_usd(micro_usd: int) -> Decimal:
    """Micro-dollars as exact USD."""
    return _scaled(micro_usd, 6)


def round_micro(pusd: int) -> int:
    """Pico-dollars rounded half-even to whole micro-dollars (0.5 µUSD goes to the even one)."""
    quotient, remainder = divmod(pusd, _PICO_PER_MICRO)
    twice = remainder * 2
    if twice > _PICO_PER_MICRO or (twice == _PICO_PER_MICRO and quotient & 1):
        quotient += 1
    return quotient


def event_micro_usd(cost_usd: float) -> int:
    """The whole micro-dollars a ``cost_updates`` event's ``costUsd`` stands for: a report sums
    these integers (exact) rather than the floats. Exact for every cost up to 2**52 micro-dollars
    (about 4.5 billion USD), which an event's float holds to within far less than half a unit."""
    return round(cost_usd * MICRO_PER_USD)


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    """One model's prices, as given (USD per million tokens) and as used (pico-dollars per token)."""

    model: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal

    @property
    def input_pusd(self) -> int:
        """Pico-dollars per input token."""
        return int(self.input_usd_per_mtok.scaleb(MODEL_PRICE_PLACES))

    @property
    def output_pusd(self) -> int:
        """Pico-dollars per output token."""
        return int(self.output_usd_per_mtok.scaleb(MODEL_PRICE_PLACES))


class PriceTable:
    """Model prices (per token) and paid tools' prices (per call), read-only once built.

    Build one with :func:`load_prices` (defaults plus an operator's file) or from mappings of
    price text::

        table = PriceTable(models={"m": ("3", "15")}, tools={"web_search": "0.01"})
        table.cost_pusd("m", 1234, 567)  # 12_207_000_000 pico-dollars: 0.012207 USD
    """

    def __init__(
        self,
        *,
        models: Mapping[str, tuple[Any, Any]],
        tools: Mapping[str, Any] | None = None,
        source: str = BUILT_IN,
    ) -> None:
        checked: dict[str, ModelPrice] = {}
        for name, (input_price, output_price) in models.items():
            where = f"models.{_key(name)}"
            _check_name(source, where, name, MODEL_MAX)
            checked[name] = ModelPrice(
                name,
                _usd(source, f"{where}.input", input_price, MODEL_PRICE_PLACES),
                _usd(source, f"{where}.output", output_price, MODEL_PRICE_PLACES),
            )
        priced: dict[str, Decimal] = {}
        for name, price in (tools or {}).items():
            where = f"tools.{_key(name)}"
            _check_name(source, where, name, TOOL_MAX)
            priced[name] = _usd(source, where, price, TOOL_PRICE_PLACES)
        self.source = source
        self.models: Mapping[str, ModelPrice] = MappingProxyType(dict(sorted(checked.items())))
        self.tools: Mapping[str, Decimal] = MappingProxyType(dict(sorted(priced.items())))
        # What the hot path reads: one dict lookup per call.
        self.per_token: Mapping[str, tuple[int, int]] = {
            name: (price.input_pusd, price.output_pusd) for name, price in checked.items()
        }
        self._known = ", ".join(self.models)

    def __repr__(self) -> str:
        return f"PriceTable({len(self.models)} models, {len(self.tools)} tools, {self.source})"

    def unknown_model(self, model: object) -> InputError:
        """The error for a model without a price: names every model that has one."""
        return InputError(
            "model",
            f"{_shown(model)} has no price (operators add models in M1_COST_PRICES_FILE)",
            list(self.models),
        )

    def cost_pusd(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """What a call costs in pico-dollars (exact). InputError for a model without a price;
        the token counts are not checked here (:func:`m1lib.record_cost` checks them)."""
        try:
            input_price, output_price = self.per_token[model]
        except (KeyError, TypeError):
            raise self.unknown_model(model) from None
        return input_tokens * input_price + output_tokens * output_price

    def tool_call_price(self, tool_name: str) -> Decimal | None:
        """USD per call of a paid tool; None for a tool without a price (not a paid tool)."""
        return self.tools.get(tool_name)

    def hit_saving(self, tool_name: str) -> Decimal:
        """USD a cache hit for ``tool_name`` saves: the price of the call it avoided, 0 for a
        tool without a price (a hit then saves latency, not money)."""
        return self.tools.get(tool_name, _ZERO)


_ZERO: Final = Decimal(0)


def load_prices(prices_file: Path | None = None) -> PriceTable:
    """The built-in prices, overridden and extended by ``prices_file`` (TOML or JSON).

    SettingsError, naming the file, the entry and the problem, for a file that cannot be read or
    parsed or holds an entry that is not a price.
    """
    models: dict[str, tuple[Any, Any]] = dict(DEFAULT_MODEL_PRICES)
    tools: dict[str, Any] = dict(DEFAULT_TOOL_PRICES)
    source = BUILT_IN
    if prices_file is not None:
        source = f"M1_COST_PRICES_FILE ({prices_file})"
        data = _read_file(prices_file, source)
        extra = sorted(set(data) - set(_FILE_KEYS))
        if extra:
            raise SettingsError(f"{source}: {_key(extra[0])}: unknown; allowed: models, tools")
        for name, entry in _table(source, "models", data.get("models", {})).items():
            where = f"models.{_key(name)}"
            entry = _table(source, where, entry)
            unknown = sorted(set(entry) - set(_MODEL_KEYS))
            if unknown:
                raise SettingsError(
                    f"{source}: {where}.{_key(unknown[0])}: unknown; allowed: input, output"
                )
            for side in _MODEL_KEYS:
                if side not in entry:
                    raise SettingsError(
                        f"{source}: {where}.{side}: missing; allowed: USD per million {side} "
                        'tokens, e.g. input = "3", output = "15"'
                    )
            models[name] = (entry["input"], entry["output"])
        tools.update(_table(source, "tools", data.get("tools", {})))
    return PriceTable(models=models, tools=tools, source=source)


def _read_file(path: Path, source: str) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise SettingsError(
            f"{source}: the name ends in {suffix or 'no suffix'!s}; allowed: .toml, .json"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{source}: cannot read the file: {exc}") from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{source}: not valid TOML: {exc}") from None

    def no_constant(name: str) -> Any:
        raise SettingsError(f"{source}: {name} is not a price; allowed: finite numbers")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise SettingsError(f"{source}: {_key(key)}: given twice; allowed: once")
            seen[key] = value
        return seen

    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=no_constant,
            object_pairs_hook=no_duplicates,
        )
    except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
        raise SettingsError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: must be an object with models and/or tools")
    return data


def _table(source: str, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingsError(
            f"{source}: {where}: {type(value).__name__} is not a table; allowed: a table "
            "(an object in JSON) of entries by name"
        )
    return value


def _key(name: object) -> str:
    """A name as it reads in a path: bare when plain, quoted (JSON) otherwise."""
    if isinstance(name, str) and _PLAIN_KEY.match(name):
        return name
    return json.dumps(name) if isinstance(name, str) else repr(name)


def _check_name(source: str, where: str, name: object, max_length: int) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > max_length:
        raise SettingsError(
            f"{source}: {where}: not a name; allowed: 1-{max_length} characters, not blank"
        )
    problem = text_problem(name)
    if problem is not None:
        raise SettingsError(f"{source}: {where}: the name {problem}; allowed: no control character")


def _usd(source: str, where: str, value: Any, places: int) -> Decimal:
    """A price from a file or the defaults: text or a number (never a float), exact."""
    per = "per million tokens" if places == MODEL_PRICE_PLACES else "per call"
    allowed = (
        f"allowed: USD {per} from 0 to {MAX_PRICE_USD} with at most {places} decimal places, "
        'as text ("0.80") or a number'
    )
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise SettingsError(f"{source}: {where}: {type(value).__name__} is not a price; {allowed}")
    try:
        price = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise SettingsError(
            f"{source}: {where}: {_shown(value)} is not a number; {allowed}"
        ) from None
    if not price.is_finite():
        raise SettingsError(f"{source}: {where}: {_shown(value)} is not finite; {allowed}")
    if not 0 <= price <= MAX_PRICE_USD:
        raise SettingsError(f"{source}: {where}: {_shown(value)} is out of range; {allowed}")
    exact = price.quantize(Decimal(1).scaleb(-places))  # at most 19 digits: no rounding at 28
    if exact != price:
        raise SettingsError(
            f"{source}: {where}: {_shown(value)} has more than {places} decimal places; {allowed}"
        )
    return _scaled(int(exact.scaleb(places)), places)


def _shown(value: object) -> str:
    """``repr`` for a message, shortened (an int of thousands of digits cannot even be printed)."""
    try:
        text = str(value) if isinstance(value, Decimal) else repr(value)
    except ValueError:
        return "an integer too long to show"
    return text if len(text) <= 100 else text[:97] + "..."


# -- the process's table ------------------------------------------------------------------------

_table_in_use: PriceTable | None = None
_lock = threading.Lock()


def default_prices() -> PriceTable:
    """The process's price table: built-in prices plus ``M1_COST_PRICES_FILE``, read on first
    use and kept (a changed file takes effect in a new process, or through :func:`install_prices`)."""
    global _table_in_use
    if _table_in_use is None:
        with _lock:
            if _table_in_use is None:
                from m1lib.settings import get_settings

                _table_in_use = load_prices(get_settings().cost.prices_file)
    return _table_in_use


def install_prices(table: PriceTable | None) -> PriceTable | None:
    """Make ``table`` the process's (None: read the settings again on next use); returns the
    previous one."""
    global _table_in_use
    with _lock:
        previous, _table_in_use = _table_in_use, table
    return previous


def tool_call_price(tool_name: str) -> Decimal | None:
    """USD per call of ``tool_name`` in the process's table; None when it has no price."""
    return default_prices().tool_call_price(tool_name)


def hit_saving(tool_name: str) -> Decimal:
    """USD a cache hit for ``tool_name`` saves in the process's table (0 when it has no price)."""
    return default_prices().hit_saving(tool_name)
