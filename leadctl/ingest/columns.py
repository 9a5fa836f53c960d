"""Column mapping: which header of a lead file is the phone, the email, the name, the channel, the campaign.

Headers match built-in Portuguese and English aliases case-, accent-, space-, underscore- and
hyphen-insensitively (``Telefone Celular``, ``e-mail``, ``NOME_COMPLETO``). Config ``ingest.columns``
adds aliases; ``--map SOURCE=TARGET`` overrides both. A target that is not canonical renames the
column. When several columns map to one canonical name, the explicit mapping wins, then config,
then the built-in alias listed first (``celular`` before ``telefone``), then the leftmost column;
the columns that lose stay ordinary fields.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from leadctl.errors import UsageError

CANONICAL: tuple[str, ...] = ("phone", "email", "name", "channel", "campaign")

# fmt: off
_BUILTIN: dict[str, tuple[str, ...]] = {
    "phone": (
        "phone", "celular", "whatsapp", "wpp", "mobile", "mobilephone", "cellphone", "cell", "telemovel",
        "telefonecelular", "numerocelular", "cel", "phonenumber", "telefone", "fone", "tel", "telephone",
        "numerodetelefone", "numerotelefone", "numero", "number",
    ),
    "email": ("email", "mail", "emailaddress", "enderecodeemail", "correio", "correioeletronico"),
    "name": (
        "name", "nome", "nomecompleto", "fullname", "firstname", "primeironome", "nomedocliente",
        "nomecliente", "contactname",
    ),
    "channel": ("channel", "canal", "tipo"),
    "campaign": ("campaign", "campanha"),
}
# fmt: on


def column_key(header: str) -> str:
    """'  Número_de-Telefone ' -> 'numerodetelefone': the form aliases are compared in."""
    decomposed = unicodedata.normalize("NFKD", header.strip().lower())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return bare.replace(" ", "").replace("_", "").replace("-", "").replace(".", "")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each canonical column sits in a row (an index, or None), and the other fields' names."""

    phone: int | None
    email: int | None
    name: int | None
    channel: int | None
    campaign: int | None
    fields: tuple[tuple[int, str], ...]


class ColumnMap:
    """Turns a header into a Layout, from built-in aliases, config aliases and explicit mappings."""

    def __init__(self, config: Mapping[str, str] | None = None, mapping: Mapping[str, str] | None = None):
        # key -> (rank, target); a lower rank wins when two columns claim one canonical name.
        self._rules: dict[str, tuple[tuple[int, int], str]] = {}
        for target, aliases in _BUILTIN.items():
            for position, alias in enumerate(aliases):
                self._rules[alias] = ((2, position), target)
        for source_rank, rules in ((1, config or {}), (0, mapping or {})):
            for alias, target in rules.items():
                name = target.strip()
                if not column_key(alias) or not name:
                    raise UsageError(f"column mapping {alias!r} -> {target!r} needs both names")
                canonical = name.lower() if name.lower() in CANONICAL else name
                self._rules[column_key(alias)] = ((source_rank, 0), canonical)

    def layout(self, headers: Sequence[str]) -> Layout:
        """Assign each header to a canonical slot or keep it as a field under its (possibly renamed) name."""
        claims: dict[str, tuple[tuple[int, int, int], int]] = {}
        names: list[str] = []
        for index, header in enumerate(headers):
            rule = self._rules.get(column_key(header))
            target = header
            if rule is not None:
                (source_rank, alias_rank), target = rule
                if target in CANONICAL:
                    rank = (source_rank, alias_rank, index)
                    if target not in claims or rank < claims[target][0]:
                        claims[target] = (rank, index)
            names.append(target)
        slots = {target: index for target, (_, index) in claims.items()}
        taken = set(slots.values())
        fields = tuple(
            (index, name if name not in CANONICAL else headers[index])
            for index, name in enumerate(names)
            if index not in taken
        )
        return Layout(
            phone=slots.get("phone"),
            email=slots.get("email"),
            name=slots.get("name"),
            channel=slots.get("channel"),
            campaign=slots.get("campaign"),
            fields=fields,
        )
