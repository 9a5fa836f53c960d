"""The parsing half of ingest: real files in tmp_path -> Lead | Reject, with exact lines and codes."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import sys
from pathlib import Path

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from leadctl.errors import InputError, UsageError
from leadctl.ingest import (
    Code,
    ParseOptions,
    RejectsWriter,
    normalise,
    parse_leads,
    readers,
    safe_cell,
    sources,
)
from leadctl.records import Lead, Reject

HEADER = "nome,telefone,email\n"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def parse(source: str | Path, data_rows: int, **options) -> list[Lead | Reject]:
    """Parse a whole file and check one result per data row: #Leads + #Rejects == data rows."""
    config = options.pop("config_columns", None)
    results = list(parse_leads(source, ParseOptions(**options), config))
    leads = [r for r in results if isinstance(r, Lead)]
    rejects = [r for r in results if isinstance(r, Reject)]
    assert len(leads) + len(rejects) == data_rows, outline(results)
    return results


def outline(results: list[Lead | Reject]) -> list[tuple[int, str]]:
    """(line, 'lead' or the reject code) for each result."""
    return [(r.line, "lead" if isinstance(r, Lead) else r.code) for r in results]


# -- CSV flavours -----------------------------------------------------------------------------------


def test_csv_accepts_normalises_and_rejects_with_lines(tmp_path):
    path = write(
        tmp_path,
        "leads.csv",
        HEADER
        + "Ana,(11) 98765-4321,Ana@Example.COM\n"
        + "Bia,+55 11 3333-4444,bia@example.com\n"
        + "Caio,123,caio@example.com\n"
        + "Duda,,\n",
    )
    results = parse(path, 4)
    assert outline(results) == [(2, "lead"), (3, "landline"), (4, "invalid_phone"), (5, "missing_contact")]
    ana = results[0]
    assert ana == Lead(
        channel="sms",
        contact="+5511987654321",
        name="Ana",
        campaign="leads",
        line=2,
        phone="+5511987654321",
        email="Ana@example.com",
    )
    assert results[2].message == "phone is too short for BR (+55)"
    assert results[2].raw == {"nome": "Caio", "telefone": "123", "email": "caio@example.com"}
    assert results[2].source == str(path)


def test_tsv(tmp_path):
    path = write(tmp_path, "leads.tsv", "nome\ttelefone\tcidade\nAna\t11987654321\tSão Paulo, SP\n")
    [lead] = parse(path, 1)
    assert (lead.contact, lead.fields) == ("+5511987654321", {"cidade": "São Paulo, SP"})


def test_semicolon_cp1252_portuguese_headers(tmp_path):
    text = (
        "Nome;Telefone;E-mail;Observação\n"
        "João Conceição;(21) 99876-5432;joao@exemplo.com.br;preço 1,5\n"
        "Maria Antônia;21 3222-1111;MARIA@EXEMPLO.COM.BR;\n"
    )
    path = write(tmp_path, "contatos.csv", text, "cp1252")
    results = parse(path, 2)
    assert outline(results) == [(2, "lead"), (3, "landline")]
    assert results[0].name == "João Conceição"
    assert results[0].email == "joao@exemplo.com.br"
    assert results[0].fields == {"Observação": "preço 1,5"}
    assert results[1].raw["Nome"] == "Maria Antônia"


def test_utf8_bom_header_is_recognised(tmp_path):
    path = write(tmp_path, "bom.csv", "\ufeffTelefone,Nome\n11987654321,Zé\n")
    [lead] = parse(path, 1)
    assert (lead.contact, lead.name, lead.fields) == ("+5511987654321", "Zé", {})


def test_pipe_delimiter_is_sniffed(tmp_path):
    path = write(tmp_path, "leads.txt", "name|phone|notes\nAna|11987654321|a, b; c\n")
    [lead] = parse(path, 1)
    assert lead.fields == {"notes": "a, b; c"}


def test_explicit_delimiter(tmp_path):
    path = write(tmp_path, "leads.csv", "name;phone\nAna;11987654321\n")
    [lead] = parse(path, 1, delimiter=";")
    assert (lead.name, lead.contact) == ("Ana", "+5511987654321")
    path = write(tmp_path, "leads.txt", "name\tphone\nAna\t11987654321\n")
    [lead] = parse(path, 1, delimiter="\\t")
    assert lead.name == "Ana"


def test_no_headers_with_columns_starts_at_line_1(tmp_path):
    path = write(tmp_path, "raw.csv", "Ana,11987654321\nBia,999\n")
    results = parse(path, 2, no_headers=True, columns=["nome", "celular"])
    assert outline(results) == [(1, "lead"), (2, "invalid_phone")]
    assert results[0].name == "Ana"


def test_no_headers_without_columns_names_them_column_n(tmp_path):
    path = write(tmp_path, "raw.csv", "Ana,11987654321\n")
    [lead] = parse(path, 1, no_headers=True, mapping={"column_2": "phone"})
    assert lead.contact == "+5511987654321"
    assert lead.fields == {"column_1": "Ana"}


def test_quoted_multiline_fields_keep_physical_lines(tmp_path):
    text = (
        HEADER.replace("\n", ",notes\n")
        + 'Ana,11987654321,,"linha 1\nlinha 2, com vírgula\n""citação"""\n'
        + "Bia,11987654322,,simples\n"
        + 'Caio,"11 98765-4323",,"a;b"\n'
    )
    path = write(tmp_path, "multi.csv", text)
    results = parse(path, 3)
    assert outline(results) == [(2, "lead"), (5, "lead"), (6, "lead")]
    assert results[0].fields["notes"] == 'linha 1\nlinha 2, com vírgula\n"citação"'


def test_crlf_and_blank_lines(tmp_path):
    text = HEADER + "\nAna,11987654321,\n\n" + 'Bia,11987654322,"x"\n' + "\n\n"
    path = write(tmp_path, "crlf.csv", text.replace("\n", "\r\n"))
    results = parse(path, 2)
    assert outline(results) == [(3, "lead"), (5, "lead")]


def test_crlf_inside_quoted_field(tmp_path):
    text = 'nome,telefone,notes\r\nAna,11987654321,"a\r\nb"\r\nBia,11987654322,c\r\n'
    path = write(tmp_path, "crlf.csv", text)
    results = parse(path, 2)
    assert outline(results) == [(2, "lead"), (4, "lead")]
    assert results[0].fields["notes"] == "a\r\nb"


def test_rows_of_empty_fields_are_blank(tmp_path):
    path = write(tmp_path, "excel.csv", "Nome;Telefone;\nAna;11987654321;\n;;\n;;\n")
    results = parse(path, 1)
    assert outline(results) == [(2, "lead")]
    assert results[0].fields == {"column_3": ""}


def test_ragged_rows(tmp_path):
    path = write(
        tmp_path,
        "ragged.csv",
        HEADER + "Ana,11987654321\n" + "Bia,11987654322,bia@example.com,extra\n" + "Caio,11987654323,\n",
    )
    results = parse(path, 3)
    assert outline(results) == [(2, "ragged_row"), (3, "ragged_row"), (4, "lead")]
    assert results[0].raw == ["Ana", "11987654321"]
    assert results[0].message == "2 fields where the header has 3"


def test_unterminated_quote_rejects_its_line_and_reading_resumes(tmp_path):
    text = (
        HEADER
        + "Ana,11987654321,\n"
        + 'Bia,"11987654322,bia@example.com\n'
        + "Caio,11987654323,\nDuda,11987654324,\n"
    )
    path = write(tmp_path, "quote.csv", text)
    results = parse(path, 4)
    assert outline(results) == [(2, "lead"), (3, "unterminated_quote"), (4, "lead"), (5, "lead")]
    assert results[1].raw == 'Bia,"11987654322,bia@example.com'


def test_unterminated_quote_on_the_last_line(tmp_path):
    path = write(tmp_path, "quote.csv", HEADER + 'Ana,11987654321,"x\n')
    assert outline(parse(path, 1)) == [(2, "unterminated_quote")]


def test_text_after_a_closing_quote_is_malformed(tmp_path):
    path = write(tmp_path, "bad.csv", HEADER + '"Ana"x,11987654321,\nBia,11987654322,\n')
    assert outline(parse(path, 2)) == [(2, "malformed_row"), (3, "lead")]


def test_quote_inside_an_unquoted_field_is_data(tmp_path):
    path = write(tmp_path, "ok.csv", 'nome,telefone,tv\nAna "Zinha",11987654321,42" tela\n')
    [lead] = parse(path, 1)
    assert (lead.name, lead.fields) == ('Ana "Zinha"', {"tv": '42" tela'})


def test_ten_megabyte_field_is_accepted(tmp_path):
    big = "x" * (10 * 1024 * 1024)
    path = write(tmp_path, "big.csv", f"nome,telefone,notes\nAna,11987654321,{big}\nBia,11987654322,y\n")
    results = parse(path, 2)
    assert outline(results) == [(2, "lead"), (3, "lead")]
    assert len(results[0].fields["notes"]) == len(big)


def test_field_over_the_limit_is_rejected_and_reading_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "FIELD_LIMIT", 1000)
    path = write(
        tmp_path, "big.csv", f"nome,telefone,notes\nAna,11987654321,{'x' * 5000}\nBia,11987654322,y\n"
    )
    limit = csv.field_size_limit()
    try:
        results = parse(path, 2)
    finally:
        csv.field_size_limit(limit)
    assert outline(results) == [(2, "field_too_large"), (3, "lead")]
    assert results[0].message == "a field is longer than 1,000 characters (or a quote is never closed)"


def test_unreadable_header_is_an_input_error(tmp_path):
    path = write(tmp_path, "h.csv", '"nome,telefone\nAna,11987654321\n')
    with pytest.raises(InputError, match=r"h.csv line 1: cannot read the header"):
        parse_leads(path, ParseOptions())


# -- JSON and NDJSON --------------------------------------------------------------------------------


def test_json_array_keeps_nested_values_and_numbers_as_phones(tmp_path):
    records = [
        {"nome": "Ana", "telefone": 5511987654321, "endereco": {"cidade": "Recife"}, "tags": ["a"]},
        {"nome": "Bia", "email": "bia@example.com", "telefone": None},
        {"nome": "Caio", "telefone": "abc"},
    ]
    path = write(tmp_path, "leads.json", json.dumps(records))
    results = parse(path, 3)
    assert outline(results) == [(1, "lead"), (2, "lead"), (3, "invalid_phone")]
    assert results[0].contact == "+5511987654321"
    assert results[0].fields == {"endereco": {"cidade": "Recife"}, "tags": ["a"]}
    assert (results[1].channel, results[1].contact) == ("email", "bia@example.com")
    assert results[2].raw == {"nome": "Caio", "telefone": "abc"}


def test_json_object_holding_one_list(tmp_path):
    document = {"exported": "2024-05-01", "count": 2, "leads": [{"phone": "+5511987654321"}, 7]}
    path = write(tmp_path, "export.json", json.dumps(document))
    results = parse(path, 2)
    assert outline(results) == [(1, "lead"), (2, "not_an_object")]


def test_ndjson_broken_line_is_rejected_others_accepted(tmp_path):
    text = (
        '{"phone": "+5511987654321", "name": "Ana"}\n'
        "\n"
        '{"phone": "+5511987654322", "name": "Bia"\n'
        "[1, 2]\n"
        '{"email": "caio@example.com"}\n'
    )
    path = write(tmp_path, "leads.ndjson", text)
    results = parse(path, 4)
    assert outline(results) == [(1, "lead"), (3, "invalid_json"), (4, "not_an_object"), (5, "lead")]
    assert results[1].raw == '{"phone": "+5511987654322", "name": "Bia"'


def test_jsonl_extension(tmp_path):
    path = write(tmp_path, "leads.jsonl", '{"whatsapp": "11987654321", "canal": "zap"}\n')
    [lead] = parse(path, 1)
    assert (lead.channel, lead.contact) == ("whatsapp", "+5511987654321")


def test_ndjson_where_no_line_is_json_is_an_input_error(tmp_path):
    path = write(tmp_path, "leads.ndjson", "phone,name\n+5511987654321,Ana\n")
    with pytest.raises(InputError, match=r"leads.ndjson line 1: not JSON lines: invalid JSON"):
        parse_leads(path, ParseOptions())


# -- compression and stdin --------------------------------------------------------------------------


def test_gzip_csv_and_ndjson(tmp_path):
    csv_gz = tmp_path / "leads.csv.gz"
    csv_gz.write_bytes(gzip.compress((HEADER + "Ana,11987654321,\nBia,x,\n").encode()))
    results = parse(csv_gz, 2)
    assert outline(results) == [(2, "lead"), (3, "invalid_phone")]
    assert results[0].campaign == "leads"
    nd_gz = tmp_path / "more.ndjson.gz"
    nd_gz.write_bytes(gzip.compress(b'{"phone": "+5511987654321"}\n'))
    assert outline(parse(nd_gz, 1)) == [(1, "lead")]


def test_gzip_detected_by_content(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(gzip.compress((HEADER + "Ana,11987654321,\n").encode()))
    assert outline(parse(path, 1)) == [(2, "lead")]


def test_truncated_gzip_is_an_input_error(tmp_path):
    path = tmp_path / "leads.csv.gz"
    body = "".join(f"Lead {i},119{i:08d},\n" for i in range(50_000))
    path.write_bytes(gzip.compress((HEADER + body).encode())[:-2000])
    with pytest.raises(InputError, match=r"leads\.csv\.gz"):
        list(parse_leads(path, ParseOptions()))


def stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_stdin_csv(monkeypatch):
    stdin(monkeypatch, "Nome;Celular\nJoão;11987654321\n".encode("cp1252"))
    [lead] = parse("-", 1)
    assert (lead.name, lead.contact, lead.campaign) == ("João", "+5511987654321", "stdin")


def test_stdin_json_and_ndjson_are_sniffed(monkeypatch):
    stdin(monkeypatch, b'[{"phone": "+5511987654321"}]')
    assert outline(parse("-", 1)) == [(1, "lead")]
    stdin(monkeypatch, b'{"leads": [{"phone": "+5511987654321"}]}')
    assert outline(parse("-", 1)) == [(1, "lead")]
    stdin(monkeypatch, b'{"phone": "+5511987654321"}\n{"phone": "+5511987654322"}\n')
    assert outline(parse("-", 2)) == [(1, "lead"), (2, "lead")]


def test_stdin_gzip(monkeypatch):
    stdin(monkeypatch, gzip.compress(b"phone\n+5511987654321\n"))
    assert outline(parse("-", 1)) == [(2, "lead")]


# -- files unusable as a whole ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.csv", bytes(range(256)) * 4, "binary file"),
        ("empty.csv", b"", "the file is empty"),
        ("blank.csv", b"\n \r\n\n", "the file is empty"),
        ("bom.csv", b"\xef\xbb\xbf", "the file is empty"),
        ("book.csv", b"PK\x03\x04" + bytes(100), "Excel workbook"),
        ("bad.json", b'[{"phone": "+5511987654321"},', "invalid JSON"),
        ("numbers.json", b"[1, 2, 3]", "JSON must be a list of lead objects"),
        ("object.json", b'{"phone": "+5511987654321"}', "JSON must be a list of lead objects"),
        ("two.json", b'{"a": [{"phone": "1"}], "b": [{"phone": "2"}]}', "JSON must be a list"),
        ("text.json", b'"leads"', "JSON must be a list of lead objects"),
        ("nocontact.csv", b"a,b,c\n1,2,3\n", "no phone or email column (columns: a, b, c)"),
    ],
)
def test_unusable_files_raise_input_error_at_call_time(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(message)) as error:
        parse_leads(path, ParseOptions())  # not iterated: the error comes from the call
    assert str(error.value).startswith(f"{path}")
    assert "\n" not in str(error.value)


def test_no_contact_message_names_the_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("leads.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError) as error:
        parse_leads("leads.csv", ParseOptions())
    assert str(error.value) == "leads.csv: no phone or email column (columns: a, b, c)"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.csv: no such file"):
        parse_leads(tmp_path / "nope.csv", ParseOptions())
    with pytest.raises(InputError, match="is a directory"):
        parse_leads(tmp_path, ParseOptions())


def test_header_only_file_yields_nothing(tmp_path):
    assert parse(write(tmp_path, "h.csv", "nome;telefone\n"), 0) == []
    assert parse(write(tmp_path, "h.json", "[]"), 0) == []


def test_bad_options_are_usage_errors(tmp_path):
    path = write(tmp_path, "leads.csv", HEADER)
    for options in (
        ParseOptions(channel="telegram"),
        ParseOptions(region="XX"),
        ParseOptions(format="xlsx"),
        ParseOptions(encoding="klingon"),
        ParseOptions(delimiter=";;"),
        ParseOptions(mapping={"telefone": ""}),
    ):
        with pytest.raises(UsageError):
            parse_leads(path, options)


# -- encodings --------------------------------------------------------------------------------------


def test_utf8_file_with_a_late_cp1252_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SAMPLE_BYTES", 64)
    text = HEADER + "".join(f"Lead {i},119876543{i:02d},\n" for i in range(10))
    path = tmp_path / "mixed.csv"
    path.write_bytes(text.encode() + "João,11987654399,\n".encode("cp1252"))
    results = parse(path, 11)
    assert results[-1].name == "João"


def test_utf16_with_bom(tmp_path):
    path = write(tmp_path, "unicode.txt", "Nome\tCelular\nJoão\t11987654321\n", "utf-16")
    [lead] = parse(path, 1)
    assert lead.name == "João"


def test_wrong_explicit_encoding_is_an_input_error_not_a_traceback(tmp_path):
    path = write(tmp_path, "leads.csv", HEADER + "João,11987654321,\n")
    with pytest.raises(InputError, match="not valid ascii"):
        list(parse_leads(path, ParseOptions(encoding="ascii")))


def test_explicit_encoding(tmp_path):
    path = write(tmp_path, "leads.csv", HEADER + "João,11987654321,\n", "latin-1")
    [lead] = parse(path, 1, encoding="latin-1")
    assert lead.name == "João"


# -- columns ----------------------------------------------------------------------------------------


def test_aliases_ignore_accents_case_and_separators(tmp_path):
    path = write(
        tmp_path,
        "aliases.csv",
        "NOME_COMPLETO;Número de Telefone;E_MAIL;CANAL;Campanha;Cidade\n"
        "Ana Maria;11987654321;ana@example.com;WhatsApp;black-friday;Recife\n",
    )
    [lead] = parse(path, 1)
    assert (lead.name, lead.contact, lead.email, lead.channel, lead.campaign) == (
        "Ana Maria",
        "+5511987654321",
        "ana@example.com",
        "whatsapp",
        "black-friday",
    )
    assert lead.fields == {"Cidade": "Recife"}


def test_mobile_column_wins_over_telephone_which_stays_a_field(tmp_path):
    path = write(tmp_path, "two.csv", "Telefone,Celular\n1133334444,11987654321\n")
    [lead] = parse(path, 1)
    assert lead.contact == "+5511987654321"
    assert lead.fields == {"Telefone": "1133334444"}


def test_map_option_overrides_and_renames(tmp_path):
    path = write(tmp_path, "map.csv", "contato,telefone,cidade\n11987654321,1133334444,Recife\n")
    [lead] = parse(path, 1, mapping={"Contato": "Phone", "cidade": "city"})
    assert lead.contact == "+5511987654321"
    assert lead.fields == {"telefone": "1133334444", "city": "Recife"}


def test_config_columns(tmp_path):
    path = write(tmp_path, "cfg.csv", "fone_principal,cliente\n11987654321,Ana\n")
    [lead] = parse(path, 1, config_columns={"fone principal": "phone", "cliente": "name"})
    assert (lead.contact, lead.name, lead.fields) == ("+5511987654321", "Ana", {})


def test_blank_and_repeated_headers_get_names(tmp_path):
    path = write(tmp_path, "dup.csv", "phone,obs,obs,\n11987654321,a,b,c\n")
    [lead] = parse(path, 1)
    assert lead.fields == {"obs": "a", "obs_2": "b", "column_4": "c"}


def test_formula_and_template_cells_are_plain_data(tmp_path):
    text = 'nome,telefone,site,msg\n"=HYPERLINK(""http://x"",""y"")",11987654321,@SUM(A1),{{ 7*7 }}\n'
    path = write(tmp_path, "formula.csv", text)
    [lead] = parse(path, 1)
    assert lead.name == '=HYPERLINK("http://x","y")'
    assert lead.fields == {"site": "@SUM(A1)", "msg": "{{ 7*7 }}"}


# -- phones, emails, channels -----------------------------------------------------------------------


def test_ninth_digit_is_added_to_old_brazilian_mobiles(tmp_path):
    path = write(
        tmp_path,
        "old.csv",
        "telefone\n11 8765-4321\n+55 (21) 9876-5432\n(31) 6123-4567\n11 3333-4444\n11987654321\n",
    )
    results = parse(path, 5)
    assert outline(results) == [(2, "lead"), (3, "lead"), (4, "lead"), (5, "landline"), (6, "lead")]
    leads = [r for r in results if isinstance(r, Lead)]
    assert [(lead.phone, lead.flags) for lead in leads] == [
        ("+5511987654321", ("added_ninth_digit",)),
        ("+5521998765432", ("added_ninth_digit",)),
        ("+5531961234567", ("added_ninth_digit",)),
        ("+5511987654321", ()),
    ]


def test_landline_rejected_for_sms_and_whatsapp_but_kept_for_email(tmp_path):
    path = write(
        tmp_path,
        "channels.csv",
        "telefone,email,canal\n"
        "11 3333-4444,a@example.com,sms\n"
        "11 3333-4444,a@example.com,whatsapp\n"
        "11 3333-4444,a@example.com,email\n"
        "+1 415 555 2671,b@example.com,sms\n",
    )
    results = parse(path, 4)
    assert outline(results) == [(2, "landline"), (3, "landline"), (4, "lead"), (5, "lead")]
    assert results[0].message == "+551133334444 is a landline; it cannot receive sms"
    email_lead = results[2]
    assert (email_lead.channel, email_lead.contact, email_lead.phone) == (
        "email",
        "a@example.com",
        "+551133334444",
    )
    assert results[3].contact == "+14155552671"  # FIXED_LINE_OR_MOBILE is accepted


@pytest.mark.parametrize(
    ("value", "channel"),
    [
        ("SMS", "sms"), ("sms", "sms"), ("Sms", "sms"), (" torpedo ", "sms"),
        ("WhatsApp", "whatsapp"), ("whats", "whatsapp"), ("wpp", "whatsapp"), ("Zap", "whatsapp"),
        ("e-mail", "email"), ("Email", "email"), ("E_MAIL", "email"), ("correio", "email"),
        ("Correio Eletrônico", "email"),
    ],
)  # fmt: skip
def test_channel_values_are_normalised(tmp_path, value, channel):
    path = write(tmp_path, "c.csv", f"telefone,email,canal\n11987654321,a@example.com,{value}\n")
    [lead] = parse(path, 1)
    assert lead.channel == channel


def test_channel_default_inference_and_unknown(tmp_path):
    path = write(
        tmp_path,
        "c.csv",
        "nome,telefone,email,canal\n"
        "Ana,11987654321,a@example.com,\n"
        "Bia,,a@example.com,\n"
        "Caio,11987654321,,telegram\n"
        "Duda,,,\n"
        "Eva,11987654321,,email\n"
        "Fabi,,a@example.com,sms\n"
        ",,,\n",
    )
    results = parse(path, 6)
    assert outline(results) == [
        (2, "lead"),
        (3, "lead"),
        (4, "unknown_channel"),
        (5, "missing_contact"),
        (6, "missing_contact"),
        (7, "missing_contact"),
    ]
    assert [r.channel for r in results[:2]] == ["sms", "email"]
    assert results[2].message == "unknown channel 'telegram' (known: sms, whatsapp, email)"
    assert results[3].message == "the row has no phone and no email"
    assert results[4].message == "email needs an email; the row has none"
    assert results[5].message == "sms needs a phone; the row has none"
    defaulted = parse(path, 6, channel="wpp")
    assert defaulted[0].channel == "whatsapp"
    assert (defaulted[1].line, defaulted[1].code) == (3, "missing_contact")


def test_invalid_email_rejects_email_rows_and_is_flagged_on_others(tmp_path):
    path = write(tmp_path, "e.csv", "telefone,email,canal\n,ana@,email\n11987654321,ana@,sms\n")
    results = parse(path, 2)
    assert outline(results) == [(2, "invalid_email"), (3, "lead")]
    assert results[0].message.startswith("email: ")
    assert (results[1].email, results[1].flags) == (None, ("invalid_email",))


def test_campaign_default_and_option(tmp_path):
    path = write(tmp_path, "promo-maio.csv", "telefone,campanha\n11987654321,\n11987654322,vip\n")
    assert [r.campaign for r in parse(path, 2)] == ["promo-maio", "vip"]
    assert [r.campaign for r in parse(path, 2, campaign="geral")] == ["geral", "vip"]


def _reference_phone(value: str, region: str) -> tuple[str, int] | None:
    """phonenumbers' own answer (E.164 and type) with the 9th-digit repair, for comparison."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 55 and len(national) == 10 and national[0] != "0" and national[2] in "6789":
        repaired = phonenumbers.parse(f"+55{national[:2]}9{national[2:]}")
        if phonenumbers.number_type(repaired) == phonenumbers.PhoneNumberType.MOBILE:
            return phonenumbers.format_number(repaired, 0), phonenumbers.PhoneNumberType.MOBILE
    kind = phonenumbers.number_type(number)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        return None
    return phonenumbers.format_number(number, 0), kind


def _assert_fast_path_agrees(values: list[str], regions: tuple[str, ...]) -> None:
    """leadctl's phone normalisation gives phonenumbers' answer for every value in every region."""
    for region in regions:
        for value in values:
            got = normalise.normalise_phone(value, region)
            want = _reference_phone(value, region)
            if want is None:
                assert isinstance(got, normalise.Invalid), (value, region, got)
            else:
                assert isinstance(got, normalise.Phone), (value, region, got)
                landline = want[1] == phonenumbers.PhoneNumberType.FIXED_LINE
                assert (got.e164, got.landline) == (want[0], landline), (value, region)


def test_phone_fast_path_agrees_with_the_library():
    rng = random.Random(7)
    values = ["+5511987654321", "011 98765-4321", "0055 11 98765 4321", "90 11 98765 4321", "+390612345678"]
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 14)))
        values += [digits, "+" + digits, "+55" + digits, "+1" + digits, "+44" + digits]
    _assert_fast_path_agrees(values, ("BR", "US", "PT"))


def test_phone_fast_path_agrees_with_the_library_on_brazilian_shapes():
    """E.164, trunk-prefixed (0XX, 90XX with a carrier), punctuated and 8-digit mobiles, valid or not."""
    rng = random.Random(13)
    areas = ["11", "21", "31", "47", "55", "61", "85", "98", "10", "20", "00", "99"]
    values = []
    for _ in range(4000):
        area = rng.choice(areas)
        local = "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 10)))
        values += [
            f"+55{area}{local}",
            f"0{area}{local}",
            f"0{area} {local[:5]} {local[5:]}",
            f"({area}) {local[:-4]}-{local[-4:]}",
            f"{area}{local}",
            f"0{rng.choice(['15', '21', '41', '12'])}{area}{local}",
            f"90{area}{local}",
            f"00{area}{local}",
            f"0 0{area}{local}",
            f"55{area}{local}",
        ]
    _assert_fast_path_agrees(values, ("BR", "PT", "AR"))


def test_email_fast_path_agrees_with_email_validator():
    values = [
        "Ana.Silva@Example.COM", "joão@exemplo.com.br", "a@b", "x@localhost", "a..b@c.com",
        "postmaster@X.com",
        "a@xn--bcher-kva.de", "o'neil+tag@sub.example.org", "a" * 65 + "@example.com",
        "b@" + "d" * 64 + ".com", "me@example.com.", "me@-x.com", "me@example.invalid", '"q"@example.com',
        "user@[127.0.0.1]", "Name <n@example.com>", "me@ex_ample.com", "x@" + ("a" * 60 + ".") * 4 + "com",
    ]  # fmt: skip
    for value in values:
        try:
            want: str | None = validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError:
            want = None
        got = normalise.normalise_email(value)
        assert (None if isinstance(got, normalise.Invalid) else got) == want, value


# -- rejects file -----------------------------------------------------------------------------------


def test_safe_cell():
    assert [safe_cell(v) for v in ["=1+1", "+5511", "-2", "@SUM(A1)", "\tx", "\rx", "ok", "", "a=b"]] == [
        "'=1+1",
        "'+5511",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "ok",
        "",
        "a=b",
    ]


def test_rejects_writer_neutralises_formulas_and_round_trips_lines(tmp_path):
    path = write(
        tmp_path,
        "leads.csv",
        "nome,telefone,notes\n"
        '"=HYPERLINK(""http://evil"",""clique"")",123,x\n'
        "Ana,11987654321,ok\n"
        "Bia,+55 11 3333-4444\n"
        '"Caio\nSegunda linha",abc,@SUM(A1)\n'
        "Duda,11 3333-4444,-1\n",
    )
    results = parse(path, 5)
    rejects = [r for r in results if isinstance(r, Reject)]
    out = tmp_path / "leads.rejects.csv"
    with RejectsWriter(out) as writer:
        for reject in rejects:
            writer.write(reject)
    assert writer.count == 4
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "reason_code", "message", "nome", "telefone", "notes"]
    assert [(int(row[0]), row[1]) for row in rows[1:]] == [(r.line, r.code) for r in rejects]
    assert [(int(row[0]), row[1]) for row in rows[1:]] == [
        (2, Code.INVALID_PHONE),
        (4, Code.RAGGED_ROW),
        (5, Code.INVALID_PHONE),
        (7, Code.LANDLINE),
    ]
    assert rows[1][3] == '\'=HYPERLINK("http://evil","clique")'
    assert rows[2][3:] == ["Bia", "'+55 11 3333-4444"]
    assert rows[3][3:] == ["Caio\nSegunda linha", "abc", "'@SUM(A1)"]
    assert rows[4][5] == "'-1"
    assert rows[4][2] == "'+551133334444 is a landline; it cannot receive sms"


def test_rejects_file_can_be_ingested_again(tmp_path):
    path = write(tmp_path, "leads.csv", "nome,telefone\n=cmd,+55 11 3333-4444\n")
    out = tmp_path / "rejects.csv"
    with RejectsWriter(out) as writer:
        for reject in parse(path, 1):
            writer.write(reject)
    [again] = parse(out, 1)
    assert (again.line, again.code) == (2, "landline")  # the ' before +55 does not hide the number
    assert again.raw == {
        "line": "2",
        "reason_code": "landline",
        "message": "'+551133334444 is a landline; it cannot receive sms",
        "nome": "'=cmd",
        "telefone": "'+55 11 3333-4444",
    }


def test_rejects_writer_creates_nothing_without_rejects(tmp_path):
    out = tmp_path / "none.csv"
    with RejectsWriter(out) as writer:
        pass
    assert (writer.count, out.exists()) == (0, False)


def test_rejects_writer_json_rows_and_broken_lines(tmp_path):
    path = write(tmp_path, "l.ndjson", '{"phone": "1", "extra": {"a": 1}}\nnot json\n')
    out = tmp_path / "r.csv"
    with RejectsWriter(out) as writer:
        for reject in parse(path, 2):
            writer.write(reject)
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "reason_code", "message", "phone", "extra"]
    assert rows[1][:2] == ["1", "invalid_phone"] and rows[1][3:] == ["1", '{"a":1}']
    assert rows[2][:2] == ["2", "invalid_json"] and rows[2][3:] == ["not json"]


def test_number_type_agrees_with_the_library():
    rng = random.Random(11)
    checked = 0
    for region in ("BR", "PT", "DE", "FR", "JP", "AR", "MX", "CL", "ES", "IN"):
        code = phonenumbers.country_code_for_region(region)
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE, None):
            example = phonenumbers.example_number_for_type(region, kind) if kind else None
            base = (
                str(example.national_number)
                if example
                else "".join(rng.choice("123456789") for _ in range(10))
            )
            for _ in range(300):
                cut = rng.randint(1, len(base))
                national = base[:cut] + "".join(
                    rng.choice("0123456789") for _ in range(rng.randint(0, 12 - cut // 2))
                )
                if not national or national[0] == "0":
                    continue
                number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
                assert normalise._number_type(code, national) == phonenumbers.number_type(number), (
                    region,
                    national,
                )
                checked += 1
    assert checked > 5000
