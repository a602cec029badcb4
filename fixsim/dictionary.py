"""FIX data dictionaries (QuickFIX XML format) and message validation.

The standard dictionaries are the ones the quickfix package installs
(``<prefix>/share/quickfix/FIX44.xml``); a path can be given instead.

``DataDictionary.validate`` applies the checks of QuickFIX's
``DataDictionary::validate`` in the same order, so a message with several
faults is rejected for the same one QuickFIX would pick: structure (header,
body, trailer order), MsgType, required fields, then per field (header,
trailer, body, each in tag order) repetition, empty value, format, enumerated
value, known tag, tag allowed for this message, and repeating-group counts.
Each failure raises ``SessionRejectError`` carrying the SessionRejectReason
(373) and the tag (371).
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from stp.fixwire import Message

# SessionRejectReason (373) codes and QuickFIX's texts for them.
INVALID_TAG_NUMBER = 0
REQUIRED_TAG_MISSING = 1
TAG_NOT_DEFINED_FOR_MESSAGE = 2
TAG_SPECIFIED_WITHOUT_VALUE = 4
VALUE_IS_INCORRECT = 5
INCORRECT_DATA_FORMAT = 6
COMPID_PROBLEM = 9
SENDINGTIME_ACCURACY_PROBLEM = 10
INVALID_MSGTYPE = 11
TAG_APPEARS_MORE_THAN_ONCE = 13
TAG_OUT_OF_ORDER = 14
INCORRECT_NUMINGROUP_COUNT = 16
OTHER = 99

REJECT_TEXT = {
    0: "Invalid tag number",
    1: "Required tag missing",
    2: "Tag not defined for this message type",
    3: "Undefined Tag",
    4: "Tag specified without a value",
    5: "Value is incorrect (out of range) for this tag",
    6: "Incorrect data format for value",
    7: "Decryption problem",
    8: "Signature problem",
    9: "CompID problem",
    10: "SendingTime accuracy problem",
    11: "Invalid MsgType",
    13: "Tag appears more than once",
    14: "Tag specified out of required order",
    15: "Repeating group fields out of order",
    16: "Incorrect NumInGroup count for repeating group",
    17: "Non Data value includes field delimiter (SOH character)",
}

ADMIN_MSG_TYPES = frozenset({"0", "1", "2", "3", "4", "5", "A"})


class SessionRejectError(Exception):
    """A message fails validation: answer with a session-level Reject."""

    def __init__(self, reason: int, tag: int = 0) -> None:
        super().__init__(f"{REJECT_TEXT.get(reason, 'Other')} ({tag})")
        self.reason = reason
        self.tag = tag


class DictionaryNotFound(FileNotFoundError):
    pass


_INT_RE = re.compile(r"-?[0-9]+\Z")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)\Z")
_TS_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})-([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?\Z")
_TIME_RE = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?\Z")
_DATE_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})\Z")

_INT_TYPES = frozenset({"INT", "LENGTH", "SEQNUM", "NUMINGROUP", "DAYOFMONTH", "TAGNUM"})
_FLOAT_TYPES = frozenset({"FLOAT", "PRICE", "QTY", "AMT", "PRICEOFFSET", "PERCENTAGE"})
_MULTI_TYPES = frozenset({"MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE", "MULTIPLECHARVALUE"})


def _valid_date(y: str, m: str, d: str) -> bool:
    return 1 <= int(m) <= 12 and 1 <= int(d) <= 31 and int(y) >= 0


def valid_format(ftype: str, value: str) -> bool:
    """QuickFIX's value convertors, as predicates."""
    if ftype in _INT_TYPES:
        return _INT_RE.match(value) is not None
    if ftype in _FLOAT_TYPES:
        return _FLOAT_RE.match(value) is not None
    if ftype == "CHAR":
        return len(value) == 1
    if ftype == "BOOLEAN":
        return value in ("Y", "N")
    if ftype == "UTCTIMESTAMP":
        m = _TS_RE.match(value)
        return m is not None and _valid_date(m[1], m[2], m[3]) and int(m[4]) < 24 \
            and int(m[5]) < 60 and int(m[6]) <= 60
    if ftype == "UTCTIMEONLY":
        m = _TIME_RE.match(value)
        return m is not None and int(m[1]) < 24 and int(m[2]) < 60 and int(m[3]) <= 60
    if ftype in ("UTCDATEONLY", "UTCDATE"):
        m = _DATE_RE.match(value)
        return m is not None and _valid_date(m[1], m[2], m[3])
    return True


@dataclass(slots=True)
class GroupDef:
    """A repeating group: its delimiter and member fields, with nested groups."""

    count_tag: int
    delimiter: int
    fields: list[int] = field(default_factory=list)          # member tags in order
    required: list[int] = field(default_factory=list)
    groups: dict[int, GroupDef] = field(default_factory=dict)

    @property
    def field_set(self) -> frozenset[int]:
        return frozenset(self.fields)


@dataclass(slots=True)
class MessageDef:
    msg_type: str
    name: str
    admin: bool
    fields: set[int] = field(default_factory=set)          # top-level tags
    required: list[int] = field(default_factory=list)      # sorted
    groups: dict[int, GroupDef] = field(default_factory=dict)


@dataclass(slots=True)
class FieldDef:
    tag: int
    name: str
    type: str
    values: frozenset[str] | None


@dataclass(slots=True)
class _Entry:
    """One parsed repeating-group entry."""

    fields: list[tuple[int, str]]
    groups: dict[int, list[_Entry]]


@dataclass(slots=True)
class ParsedBody:
    """A message split along the dictionary: header, body, trailer, groups."""

    header: list[tuple[int, str]]
    body: list[tuple[int, str]]
    trailer: list[tuple[int, str]]
    groups: dict[int, list[_Entry]]
    header_groups: dict[int, list[_Entry]]
    out_of_order_tag: int

    def ordered_body(self) -> list[tuple[int, str]]:
        """Body fields by tag number, each group's entries right after its count."""
        out: list[tuple[int, str]] = []
        for tag, value in sorted(self.body, key=lambda f: f[0]):
            out.append((tag, value))
            for entry in self.groups.get(tag, ()):
                out.extend(_flatten(entry))
        return out


def _flatten(entry: _Entry) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for tag, value in entry.fields:
        out.append((tag, value))
        for sub in entry.groups.get(tag, ()):
            out.extend(_flatten(sub))
    return out


class DataDictionary:
    def __init__(self, path: Path) -> None:
        self.path = path
        root = ET.parse(path).getroot()
        self.begin_string = f"{root.get('type', 'FIX')}.{root.get('major')}.{root.get('minor')}"
        self.fields: dict[int, FieldDef] = {}
        names: dict[str, int] = {}
        for f in root.iterfind("fields/field"):
            tag = int(f.get("number", "0"))
            values = frozenset(v.get("enum", "") for v in f.iterfind("value")) or None
            fd = FieldDef(tag, f.get("name", ""), f.get("type", "STRING").upper(), values)
            self.fields[tag] = fd
            names[fd.name] = tag
        self._names = names
        self._components = {c.get("name", ""): c for c in root.iterfind("components/component")}

        self.header = MessageDef("_header_", "Header", True)
        self._collect(root.find("header"), self.header.fields, self.header.required,
                      self.header.groups, True)
        self.trailer = MessageDef("_trailer_", "Trailer", True)
        self._collect(root.find("trailer"), self.trailer.fields, self.trailer.required,
                      self.trailer.groups, True)
        self.header_tags = frozenset(self.header.fields) | {8, 9, 35}
        self.trailer_tags = frozenset(self.trailer.fields) | {10}
        self.messages: dict[str, MessageDef] = {}
        for m in root.iterfind("messages/message"):
            md = MessageDef(m.get("msgtype", ""), m.get("name", ""), m.get("msgcat") == "admin")
            self._collect(m, md.fields, md.required, md.groups, True)
            md.required.sort()
            self.messages[md.msg_type] = md
        self.header.required.sort()
        self.trailer.required.sort()
        self.length_to_data = {
            tag: tag + 1 for tag, fd in self.fields.items()
            if fd.type == "LENGTH" and tag + 1 in self.fields and self.fields[tag + 1].type == "DATA"
        }
        # Pairs that are not adjacent numbers in the standard.
        for length_name, data_name in (("SignatureLength", "Signature"),
                                       ("SecureDataLen", "SecureData")):
            if length_name in names and data_name in names:
                self.length_to_data[names[length_name]] = names[data_name]

    def _collect(self, node: ET.Element | None, fields: set[int] | list[int], required: list[int],
                 groups: dict[int, GroupDef], parent_required: bool) -> None:
        if node is None:
            return
        for child in node:
            req = child.get("required") == "Y"
            if child.tag == "field":
                tag = self._names[child.get("name", "")]
                _add(fields, tag)
                if req and parent_required:
                    required.append(tag)
            elif child.tag == "component":
                comp = self._components[child.get("name", "")]
                self._collect(comp, fields, required, groups, req and parent_required)
            elif child.tag == "group":
                tag = self._names[child.get("name", "")]
                _add(fields, tag)
                if req and parent_required:
                    required.append(tag)
                group = GroupDef(tag, 0)
                self._collect(child, group.fields, group.required, group.groups, True)
                group.delimiter = group.fields[0] if group.fields else 0
                groups[tag] = group

    # ------------------------------------------------------------------
    def split(self, msg: Message, msg_type: str) -> ParsedBody:
        """Split the wire fields into header/body/trailer and parse groups."""
        header: list[tuple[int, str]] = []
        body: list[tuple[int, str]] = []
        trailer: list[tuple[int, str]] = []
        groups: dict[int, list[_Entry]] = {}
        header_groups: dict[int, list[_Entry]] = {}
        header_tags, trailer_tags = self.header_tags, self.trailer_tags
        mdef = self.messages.get(msg_type)
        section = 0  # 0 header, 1 body, 2 trailer
        out_of_order = 0
        fields = msg.fields
        i, n = 0, len(fields)
        while i < n:
            tag, value = fields[i]
            i += 1
            if tag in header_tags:
                if section != 0 and not out_of_order:
                    out_of_order = tag
                header.append((tag, value))
                group = self.header.groups.get(tag)
                if group is not None:
                    i = _parse_group(fields, i, group, header_groups)
            elif tag in trailer_tags:
                section = 2
                trailer.append((tag, value))
            else:
                if section == 2 and not out_of_order:
                    out_of_order = tag
                section = 1
                body.append((tag, value))
                if mdef is not None:
                    group = mdef.groups.get(tag)
                    if group is not None:
                        i = _parse_group(fields, i, group, groups)
        return ParsedBody(header, body, trailer, groups, header_groups, out_of_order)

    def validate(self, msg: Message) -> ParsedBody:
        """Raise SessionRejectError for the first fault QuickFIX would report."""
        msg_type = msg.msg_type
        parsed = self.split(msg, msg_type)
        if parsed.out_of_order_tag:
            raise SessionRejectError(TAG_OUT_OF_ORDER, parsed.out_of_order_tag)
        mdef = self.messages.get(msg_type)
        if mdef is None:
            raise SessionRejectError(INVALID_MSGTYPE)
        self._check_required(self.header.required, parsed.header)
        self._check_required(self.trailer.required, parsed.trailer)
        self._check_required(mdef.required, parsed.body)
        self._check_group_required(mdef.groups, parsed.groups)
        self._iterate(parsed.header, None, self.header.groups, parsed.header_groups)
        self._iterate(parsed.trailer, None, {}, {})
        self._iterate(parsed.body, mdef, mdef.groups, parsed.groups)
        return parsed

    @staticmethod
    def _check_required(required: list[int], fields: list[tuple[int, str]]) -> None:
        if not required:
            return
        present = {t for t, _ in fields}
        for tag in required:
            if tag not in present:
                raise SessionRejectError(REQUIRED_TAG_MISSING, tag)

    def _check_group_required(self, defs: dict[int, GroupDef],
                              groups: dict[int, list[_Entry]]) -> None:
        for count_tag, entries in groups.items():
            gdef = defs[count_tag]
            for entry in entries:
                self._check_required(sorted(gdef.required), entry.fields)
                self._check_group_required(gdef.groups, entry.groups)

    def _iterate(self, fields: list[tuple[int, str]], mdef: MessageDef | None,
                 group_defs: dict[int, GroupDef], groups: dict[int, list[_Entry]],
                 allowed: frozenset[int] | None = None) -> None:
        last = None
        known = self.fields
        for tag, value in sorted(fields, key=lambda f: f[0]):
            if tag == last:
                raise SessionRejectError(TAG_APPEARS_MORE_THAN_ONCE, tag)
            last = tag
            if value == "":
                raise SessionRejectError(TAG_SPECIFIED_WITHOUT_VALUE, tag)
            fd = known.get(tag)
            if fd is not None:
                if not valid_format(fd.type, value):
                    raise SessionRejectError(INCORRECT_DATA_FORMAT, tag)
                if fd.values is not None and not _valid_value(fd, value):
                    raise SessionRejectError(VALUE_IS_INCORRECT, tag)
            else:
                raise SessionRejectError(INVALID_TAG_NUMBER, tag)
            if mdef is not None and tag not in mdef.fields:
                raise SessionRejectError(TAG_NOT_DEFINED_FOR_MESSAGE, tag)
            if allowed is not None and tag not in allowed:
                raise SessionRejectError(TAG_NOT_DEFINED_FOR_MESSAGE, tag)
            gdef = group_defs.get(tag)
            if gdef is not None:
                entries = groups.get(tag, [])
                if not _INT_RE.match(value) or int(value) != len(entries):
                    raise SessionRejectError(INCORRECT_NUMINGROUP_COUNT, tag)
                for entry in entries:
                    self._iterate(entry.fields, None, gdef.groups, entry.groups,
                                  gdef.field_set)


def _valid_value(fd: FieldDef, value: str) -> bool:
    values = fd.values
    assert values is not None
    if fd.type in _MULTI_TYPES:
        return all(v in values for v in value.split(" "))
    return value in values


def _add(target: set[int] | list[int], tag: int) -> None:
    if isinstance(target, set):
        target.add(tag)
    elif tag not in target:
        target.append(tag)


def _parse_group(fields: list[tuple[int, str]], i: int, group: GroupDef,
                 out: dict[int, list[_Entry]]) -> int:
    """Consume group entries starting at index i; return the next index."""
    members = group.field_set
    entries: list[_Entry] = []
    current: _Entry | None = None
    n = len(fields)
    while i < n:
        tag = fields[i][0]
        if tag == group.delimiter or (current is None and tag in members):
            current = _Entry([], {})
            entries.append(current)
        elif tag not in members or current is None:
            break
        current.fields.append(fields[i])
        i += 1
        sub = group.groups.get(tag)
        if sub is not None:
            i = _parse_group(fields, i, sub, current.groups)
    out[group.count_tag] = entries
    return i


def standard_dictionary_dir() -> Path:
    """Where the quickfix package installs FIX4x.xml (``share/quickfix``)."""
    env = os.environ.get("STP_FIX_SPEC_DIR")
    if env:
        return Path(env)
    candidates = [Path(sys.prefix) / "share" / "quickfix",
                  Path(sysconfig.get_path("data")) / "share" / "quickfix",
                  Path(sys.base_prefix) / "share" / "quickfix"]
    for c in candidates:
        if (c / "FIX44.xml").exists():
            return c
    raise DictionaryNotFound(
        "FIX data dictionaries not found: install the quickfix package (it ships "
        "share/quickfix/FIX44.xml) or set STP_FIX_SPEC_DIR")


@cache
def load_dictionary(begin_string: str, path: str | None = None) -> DataDictionary:
    """The standard dictionary for a BeginString such as "FIX.4.4" (cached)."""
    if path is None:
        name = begin_string.replace(".", "").replace("FIX", "FIX", 1)  # FIX.4.4 -> FIX44
        file = standard_dictionary_dir() / f"{name}.xml"
    else:
        file = Path(path)
    if not file.exists():
        raise DictionaryNotFound(f"no data dictionary at {file}")
    return DataDictionary(file)
