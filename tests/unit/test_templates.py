"""machine.templates against Go's text/template.

The CASES tables below were produced by running Go 1.19's text/template (with
docker-machine's json/prettyjson and strings.ToUpper/ToLower as upper/lower)
over the same template and the same JSON data decoded into interface{}; the
data is decoded here the same way Go does (numbers become float64).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from pymachine.machine.errors import MachineError
from pymachine.machine.tabwriter import tabwrite
from pymachine.machine.templates import MISSING, TemplateError, go_json, go_sprint, parse, render

# fmt: off
DATA1 = {'Big': 1000000,
 'Driver': {'IPAddress': '192.168.99.100', 'Nested': {'K': [1, 2]}, 'SSHPort': 22},
 'DriverName': 'virtualbox',
 'E': '',
 'EL': [],
 'EM': {},
 'F': 22,
 'Fl': 1.5,
 'HostOptions': {'EngineOptions': {'Env': None, 'Labels': ['a=b', 'c=d']}},
 'Html': '<a&b>',
 'L': ['a', 'b', 'c'],
 'M': {'a': 1, 'b': 2, 'c': {'d': 'deep'}},
 'N': 3,
 'NL': [1, None, 'x'],
 'Name': 'dev',
 'Null': None,
 'T': True,
 'U': 'héllo'}

CASES1 = [('plain text', 'plain text', None),
 ('{{.}}',
  ('map[Big:1e+06 Driver:map[IPAddress:192.168.99.100 Nested:map[K:[1 2]] SSHPort:22] '
  'DriverName:virtualbox E: EL:[] EM:map[] F:22 Fl:1.5 '
  'HostOptions:map[EngineOptions:map[Env:<nil> Labels:[a=b c=d]]] Html:<a&b> L:[a b c] '
  'M:map[a:1 b:2 c:map[d:deep]] N:3 NL:[1 <nil> x] Name:dev Null:<nil> T:true U:héllo]'),
  None),
 ('{{.Name}}', 'dev', None),
 ('{{ .Name }}', 'dev', None),
 ('{{.Driver.IPAddress}}', '192.168.99.100', None),
 ('{{.A.B.C}}', '<no value>', None),
 ('{{.Missing}}', '<no value>', None),
 ('{{.Missing.Foo}}', '<no value>', None),
 ('{{.Null}}', '<no value>', None),
 ('{{.Null.Foo}}',
  '',
  'template: :1:7: executing "" at <.Null.Foo>: nil pointer evaluating interface {}.Foo'),
 ('{{.Name.Foo}}',
  '',
  ('template: :1:7: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type interface '
  '{}')),
 ('{{.L}}', '[a b c]', None),
 ('{{.EL}}', '[]', None),
 ('{{.NL}}', '[1 <nil> x]', None),
 ('{{.M}}', 'map[a:1 b:2 c:map[d:deep]]', None),
 ('{{.EM}}', 'map[]', None),
 ('{{.T}}', 'true', None),
 ('{{.N}}', '3', None),
 ('{{.F}}', '22', None),
 ('{{.Fl}}', '1.5', None),
 ('{{.Big}}', '1e+06', None),
 ('{{.Driver}}', 'map[IPAddress:192.168.99.100 Nested:map[K:[1 2]] SSHPort:22]', None),
 ('a {{- .Name -}} b', 'adevb', None),
 ('a  {{- .Name}}  b', 'adev  b', None),
 ('x\n  {{- .Name -}}\n  y', 'xdevy', None),
 ('{{json .Name}}', '"dev"', None),
 ('{{json .}}',
  '{"Big":1000000,"Driver":{"IPAddress":"192.168.99.100","Nested":{"K":[1,2]},"SSHPort":22},"DriverName":"virtualbox","E":"","EL":[],"EM":{},"F":22,"Fl":1.5,"HostOptions":{"EngineOptions":{"Env":null,"Labels":["a=b","c=d"]}},"Html":"\\u003ca\\u0026b\\u003e","L":["a","b","c"],"M":{"a":1,"b":2,"c":{"d":"deep"}},"N":3,"NL":[1,null,"x"],"Name":"dev","Null":null,"T":true,"U":"héllo"}',
  None),
 ('{{json .Html}}', '"\\u003ca\\u0026b\\u003e"', None),
 ('{{json .M}}', '{"a":1,"b":2,"c":{"d":"deep"}}', None),
 ('{{json .Null}}', 'null', None),
 ('{{json .Missing}}', 'null', None),
 ('{{json .F}}', '22', None),
 ('{{json .Fl}}', '1.5', None),
 ('{{json .Big}}', '1000000', None),
 ('{{json .U}}', '"héllo"', None),
 ('{{prettyjson .Driver}}',
  ('{\n'
  '    "IPAddress": "192.168.99.100",\n'
  '    "Nested": {\n'
  '        "K": [\n'
  '            1,\n'
  '            2\n'
  '        ]\n'
  '    },\n'
  '    "SSHPort": 22\n'
  '}'),
  None),
 ('{{prettyjson .EL}}', '[]', None),
 ('{{prettyjson .EM}}', '{}', None),
 ('{{prettyjson .HostOptions}}',
  ('{\n'
  '    "EngineOptions": {\n'
  '        "Env": null,\n'
  '        "Labels": [\n'
  '            "a=b",\n'
  '            "c=d"\n'
  '        ]\n'
  '    }\n'
  '}'),
  None),
 ('{{.Name | json}}', '"dev"', None),
 ('{{.Name | upper}}', 'DEV', None),
 ('{{upper .Name}}', 'DEV', None),
 ('{{lower "ABC"}}', 'abc', None),
 ('{{len .L}}', '3', None),
 ('{{len .U}}', '6', None),
 ('{{len .M}}', '3', None),
 ('{{len .N}}',
  '',
  'template: :1:2: executing "" at <len .N>: error calling len: len of type float64'),
 ('{{index .L 1}}', 'b', None),
 ('{{index .M "a"}}', '1', None),
 ('{{index .M "zz"}}', '<no value>', None),
 ('{{index .L 5}}',
  '',
  'template: :1:2: executing "" at <index .L 5>: error calling index: index out of range: 5'),
 ('{{index .M "c" "d"}}', 'deep', None),
 ('{{printf "%s-%d" .Name 5}}', 'dev-5', None),
 ('{{printf "%v" .L}}', '[a b c]', None),
 ('{{printf "%q" .Name}}', '"dev"', None),
 ('{{printf "%d" .F}}', '%!d(float64=22)', None),
 ('{{printf "%s"}}', '%!s(MISSING)', None),
 ('{{printf "%s" .Name .Name}}', 'dev%!(EXTRA string=dev)', None),
 ('{{printf "%5s|%-5s|" "a" "b"}}', '    a|b    |', None),
 ('{{printf "%.2f" .Fl}}', '1.50', None),
 ('{{printf "%x" .Name}}', '646576', None),
 ('{{printf "%05d" 42}}', '00042', None),
 ('{{printf "%v %v" .Null .Missing}}', '<nil> <nil>', None),
 ('{{print .Name 1 2 "x"}}', 'dev1 2x', None),
 ('{{println .Name 1}}', 'dev 1\n', None),
 ('{{if .T}}yes{{end}}', 'yes', None),
 ('{{if .E}}yes{{else}}no{{end}}', 'no', None),
 ('{{if .Missing}}y{{else}}n{{end}}', 'n', None),
 ('{{if .Null}}y{{else}}n{{end}}', 'n', None),
 ('{{if .EL}}y{{else}}n{{end}}', 'n', None),
 ('{{if .EM}}y{{else}}n{{end}}', 'n', None),
 ('{{if eq .Name "dev"}}A{{else if eq .Name "x"}}B{{else}}C{{end}}', 'A', None),
 ('{{if eq .Name "x"}}A{{else if eq .Name "dev"}}B{{else}}C{{end}}', 'B', None),
 ('{{if ne .Name "dev"}}A{{else}}B{{end}}', 'B', None),
 ('{{if not .T}}A{{else}}B{{end}}', 'B', None),
 ('{{and .T .Name}}', 'dev', None),
 ('{{and .E .Name}}', '', None),
 ('{{or .E .Name}}', 'dev', None),
 ('{{or .E .EL}}', '[]', None),
 ('{{eq .Name "a" "dev"}}', 'true', None),
 ('{{range .L}}[{{.}}]{{end}}', '[a][b][c]', None),
 ('{{range $i, $e := .L}}{{$i}}={{$e}} {{end}}', '0=a 1=b 2=c ', None),
 ('{{range $e := .L}}{{$e}}{{end}}', 'abc', None),
 ('{{range .EL}}x{{else}}empty{{end}}', 'empty', None),
 ('{{range $k, $v := .M}}{{$k}}:{{$v}};{{end}}', 'a:1;b:2;c:map[d:deep];', None),
 ('{{range .M}}{{.}};{{end}}', '1;2;map[d:deep];', None),
 ('{{range .Missing}}x{{else}}none{{end}}', 'none', None),
 ('{{range .NL}}<{{.}}>{{end}}', '<1><<no value>><x>', None),
 ('{{range .Name}}x{{end}}',
  '',
  'template: :1:8: executing "" at <.Name>: range can\'t iterate over dev'),
 ('{{with .Driver}}{{.IPAddress}}:{{.SSHPort}}{{end}}', '192.168.99.100:22', None),
 ('{{with .E}}x{{else}}empty{{end}}', 'empty', None),
 ('{{with .Name}}{{.Foo}}{{end}}',
  '',
  'template: :1:16: executing "" at <.Foo>: can\'t evaluate field Foo in type string'),
 ('{{$x := .Name}}{{$x}}', 'dev', None),
 ('{{$x := 1}}{{$x = 2}}{{$x}}', '2', None),
 ('{{range .L}}{{$.Name}}{{end}}', 'devdevdev', None),
 ('{{(index .M "c").d}}', 'deep', None),
 ('{{(.Driver).SSHPort}}', '22', None),
 ('{{.Driver.Nested.K}}', '[1 2]', None),
 ('{{/* comment */}}x', 'x', None),
 ('{{- /* comment */ -}} x ', 'x ', None),
 ('{{`raw\\n`}}', 'raw\\n', None),
 ('{{"a\\tb"}}', 'a\tb', None),
 ("{{'a'}}", '97', None),
 ('{{1.5}}', '1.5', None),
 ('{{0x10}}', '16', None),
 ('{{.HostOptions.EngineOptions.Env}}', '<no value>', None),
 ('{{lt 1 2}} {{gt "b" "a"}} {{le 2 2}} {{ge 1 2}}', 'true true true false', None),
 ('{{html .Html}}', '&lt;a&amp;b&gt;', None),
 ('{{urlquery "a b&c"}}', 'a+b%26c', None),
 ('{{slice .L 1 2}}', '[b]', None),
 ('{{slice .Name 1}}', 'ev', None),
 ('{{.Name', None, 'template parsing error: template: :1: unclosed action'),
 ('{{end}}', None, 'template parsing error: template: :1: unexpected {{end}}'),
 ('{{foo .X}}', None, 'template parsing error: template: :1: function "foo" not defined'),
 ('{{.Name}', None, "template parsing error: template: :1: bad character U+007D '}'"),
 ('{{if .T}}x', None, 'template parsing error: template: :1: unexpected EOF'),
 ('{{else}}', None, 'template parsing error: template: :1: unexpected {{else}}'),
 ('{{.Name}}}}', 'dev}}', None),
 ('{{ .Name | }}', 'dev', None),
 ('{{$x}}', None, 'template parsing error: template: :1: undefined variable "$x"'),
 ('{{range .L}}{{end}}{{end}}',
  None,
  'template parsing error: template: :1: unexpected {{end}}'),
 ('{{"unterminated}}',
  None,
  'template parsing error: template: :1: unterminated quoted string'),
 ('{{.Name ^}}', None, 'template parsing error: template: :1: unexpected "^" in operand'),
 ('{{(.Name}}', None, 'template parsing error: template: :1: unclosed left paren'),
 ('{{.Name)}}', None, 'template parsing error: template: :1: unexpected ")" in command'),
 ('{{}}', None, 'template parsing error: template: :1: missing value for command'),
 ('{{if}}{{end}}', None, 'template parsing error: template: :1: missing value for if'),
 ('{{1x}}', None, 'template parsing error: template: :1: bad number syntax: "1x"'),
 ('{{.Name | "x"}}',
  None,
  'template parsing error: template: :1: non executable command in pipeline stage 2'),
 ('{{3.Foo}}', None, 'template parsing error: template: :1: bad number syntax: "3.F"'),
 ('{{/* x }}', None, 'template parsing error: template: :1: unclosed comment'),
 ('line1\n{{.Name\nfoo',
  None,
  'template parsing error: template: :3: function "foo" not defined'),
 ('{{range $a, $b, $c := .L}}{{end}}',
  None,
  'template parsing error: template: :1: too many declarations in range'),
 ('{{.Name .Foo}}',
  '',
  'template: :1:2: executing "" at <.Name>: Name is not a method but has arguments'),
 ('{{nil}}', '', 'template: :1:2: executing "" at <nil>: nil is not a command'),
 ('{{printf}}',
  '',
  ('template: :1:2: executing "" at <printf>: wrong number of args for printf: want at least 1 '
  'got 0')),
 ('{{upper 1 2}}',
  '',
  'template: :1:2: executing "" at <upper>: wrong number of args for upper: want 1 got 2'),
 ('{{upper .N}}',
  '',
  'template: :1:8: executing "" at <.N>: wrong type for value; expected string; got float64'),
 ('{{len 3}}',
  '',
  'template: :1:2: executing "" at <len 3>: error calling len: len of type int'),
 ('{{.N.Foo}}',
  '',
  'template: :1:4: executing "" at <.N.Foo>: can\'t evaluate field Foo in type interface {}'),
 ('{{with $x := .Name}}{{$x}}{{end}}{{$x}}',
  None,
  'template parsing error: template: :1: undefined variable "$x"')]

DATA2 = {'L': ['a', 'b'],
 'Labels': {'a': '2', 'z': '1'},
 'M': {'k': [1, 2], 'x': {'y': 1}},
 'N': 2,
 'Name': 'dev',
 'Nums': [0.1, 1e+21, 1e-07, 123.456, -0.0, 100, 1234567],
 'S': 'a%b'}

CASES2 = [('line1\n{{.Nope.X}}\n{{.Name.Foo}}',
  'line1\n<no value>\n',
  ('template: :3:7: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type interface '
  '{}')),
 ('a\n  b {{.Name.Foo}}',
  'a\n  b ',
  ('template: :2:11: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type interface '
  '{}')),
 ('héllo {{.Name.Foo}}',
  'héllo ',
  ('template: :1:14: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type interface '
  '{}')),
 ('{{if .Name}}\n{{.Name.Foo}}{{end}}',
  '\n',
  ('template: :2:7: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type interface '
  '{}')),
 ('l1\nl2\n{{end}}', None, 'template parsing error: template: :3: unexpected {{end}}'),
 ('l1\n{{if .Name}}\nx', None, 'template parsing error: template: :3: unexpected EOF'),
 ('l1\n{{.Name\n}}', 'l1\ndev', None),
 ('l1\n{{.Name\n|\nupper}}', 'l1\nDEV', None),
 ('{{ .Name -}}\n\n  x', 'devx', None),
 ('  \n{{- .Name}}', 'dev', None),
 ('{{-3}}', '-3', None),
 ('{{- 3}}', '3', None),
 ('{{3 -}}', '3', None),
 ('{{.Name -}}', 'dev', None),
 ('{{range $k, $v := .Labels}}{{$k}}={{$v}},{{end}}', 'a=2,z=1,', None),
 ('{{range $k := .Labels}}{{$k}}{{end}}', '21', None),
 ('{{range $i, $x := .L}}{{range $j, $y := $.L}}{{$i}}{{$j}}{{$x}}{{$y}} {{end}}{{end}}',
  '00aa 01ab 10ba 11bb ',
  None),
 ('{{range .M.k}}{{.}}{{else}}e{{end}}', '12', None),
 ('{{.Nums}}', '[0.1 1e+21 1e-07 123.456 -0 100 1.234567e+06]', None),
 ('{{range .Nums}}{{json .}} {{end}}', '0.1 1e+21 1e-7 123.456 -0 100 1234567 ', None),
 ('{{range .Nums}}{{printf "%v|%g|%e|%.1f" . . . .}} {{end}}',
  ('0.1|0.1|1.000000e-01|0.1 1e+21|1e+21|1.000000e+21|1000000000000000000000.0 '
  '1e-07|1e-07|1.000000e-07|0.0 123.456|123.456|1.234560e+02|123.5 -0|-0|-0.000000e+00|-0.0 '
  '100|100|1.000000e+02|100.0 1.234567e+06|1.234567e+06|1.234567e+06|1234567.0 '),
  None),
 ('{{printf .S}}', 'a%!b(MISSING)', None),
 ('{{printf "%d%%" .N}}', '%!d(float64=2)%', None),
 ('{{printf "%t" true}}', 'true', None),
 ('{{printf "%c" 65}}', 'A', None),
 ('{{printf "%6.2f|%-6d|%+d" 3.14159 7 7}}', '  3.14|7     |+7', None),
 ('{{printf "%q" "a\\"b\\n"}}', '"a\\"b\\n"', None),
 ('{{printf "%s" .L}}', '[a b]', None),
 ('{{printf "%v" .M}}', 'map[k:[1 2] x:map[y:1]]', None),
 ('{{printf "%z" 1}}', '%!z(int=1)', None),
 ('{{printf "%"}}', '%!(NOVERB)', None),
 ('{{printf "%d" "x"}}', '%!d(string=x)', None),
 ('{{printf "%s" 3}}', '%!s(int=3)', None),
 ('{{printf "%s" nil}}', '%!s(<nil>)', None),
 ('{{with .M.x}}{{.y}}{{else}}no{{end}}', '1', None),
 ('{{with .M.zz}}{{.y}}{{else}}no{{end}}', 'no', None),
 ('{{if and .Name (eq .N 2.0)}}ok{{end}}', 'ok', None),
 ('{{if or (eq .Name "a") (eq .Name "dev")}}ok{{end}}', 'ok', None),
 ('{{.Name | printf "%s!"}}', 'dev!', None),
 ('{{.Name | printf "%s-%s" "a"}}', 'a-dev', None),
 ('{{"x" | upper | lower}}', 'x', None),
 ('{{$}}',
  ('map[L:[a b] Labels:map[a:2 z:1] M:map[k:[1 2] x:map[y:1]] N:2 Name:dev Nums:[0.1 1e+21 '
  '1e-07 123.456 -0 100 1.234567e+06] S:a%b]'),
  None),
 ('{{$.Name}}', 'dev', None),
 ('{{$x := .L}}{{index $x 0}}', 'a', None),
 ('{{.L | len}}', '2', None),
 ('{{ .  }}',
  ('map[L:[a b] Labels:map[a:2 z:1] M:map[k:[1 2] x:map[y:1]] N:2 Name:dev Nums:[0.1 1e+21 '
  '1e-07 123.456 -0 100 1.234567e+06] S:a%b]'),
  None),
 ('{{if .Name}}a{{else}}b{{else}}c{{end}}',
  None,
  'template parsing error: template: :1: expected end; found {{else}}'),
 ('{{range .L}}{{else if .Name}}x{{end}}',
  None,
  'template parsing error: template: :1: unexpected <if> in input'),
 ('{{with .Name}}{{else if .Name}}x{{end}}',
  None,
  'template parsing error: template: :1: unexpected <if> in input'),
 ('{{.Name | .Name}}',
  '',
  'template: :1:10: executing "" at <.Name>: Name is not a method but has arguments'),
 ('{{printf "%s" | upper}}', '%!S(MISSING)', None),
 ('{{(1)}}', '1', None),
 ('{{(.Name).Foo}}',
  '',
  'template: :1:3: executing "" at <.Name>: can\'t evaluate field Foo in type string'),
 ('{{.L.Foo}}',
  '',
  'template: :1:4: executing "" at <.L.Foo>: can\'t evaluate field Foo in type interface {}'),
 ('{{index .L "a"}}',
  '',
  ('template: :1:2: executing "" at <index .L "a">: error calling index: cannot index '
  'slice/array with type string')),
 ('{{index nil 1}}',
  '',
  'template: :1:2: executing "" at <index nil 1>: error calling index: index of untyped nil'),
 ('{{index .Name 0}}', '100', None),
 ('{{not}}',
  '',
  'template: :1:2: executing "" at <not>: wrong number of args for not: want 1 got 0'),
 ('{{eq .L .L}}',
  '',
  ('template: :1:2: executing "" at <eq .L .L>: error calling eq: non-comparable type [a b]: '
  '[]interface {}')),
 ('{{eq 1 "a"}}',
  '',
  ('template: :1:2: executing "" at <eq 1 "a">: error calling eq: incompatible types for '
  'comparison')),
 ('{{lt .Name 1}}',
  '',
  ('template: :1:2: executing "" at <lt .Name 1>: error calling lt: incompatible types for '
  'comparison')),
 ('{{.Name 1}}',
  '',
  'template: :1:2: executing "" at <.Name>: Name is not a method but has arguments'),
 ('{{$.Name.Foo 1}}',
  '',
  ('template: :1:3: executing "" at <$.Name.Foo>: can\'t evaluate field Foo in type interface '
  '{}')),
 ('{{json .Nums}}', '[0.1,1e+21,1e-7,123.456,-0,100,1234567]', None),
 ('{{prettyjson .M}}',
  '{\n    "k": [\n        1,\n        2\n    ],\n    "x": {\n        "y": 1\n    }\n}',
  None),
 ('{{printf "%v" .Nums}}', '[0.1 1e+21 1e-07 123.456 -0 100 1.234567e+06]', None),
 ('{{.Labels}}', 'map[a:2 z:1]', None),
 ('{{"\\x41\\u00e9\\101"}}', 'AéA', None),
 ('{{"\\q"}}', None, 'template parsing error: template: :1: invalid syntax'),
 ("{{'\\n'}}", '10', None),
 ('{{1_000}}', '1000', None),
 ('{{0b101}}', '5', None),
 ('{{0o17}}', '15', None),
 ('{{017}}', '15', None),
 ('{{1e3}}', '1000', None),
 ('{{.5}}', '0.5', None),
 ('{{-.5}}', '-0.5', None),
 ('{{1e400}}', None, 'template parsing error: template: :1: illegal number syntax: "1e400"'),
 ('{{99999999999999999999}}',
  None,
  'template parsing error: template: :1: integer overflow: "99999999999999999999"'),
 ('{{$x := .Name}}{{if true}}{{$x := 1}}{{$x}}{{end}}{{$x}}', '1dev', None),
 ('{{if true}}{{$y := 1}}{{end}}{{$y}}',
  None,
  'template parsing error: template: :1: undefined variable "$y"')]
# fmt: on


def _go_decode(data: dict) -> dict:
    """Decode like Go's json.Unmarshal into interface{}: every number is a float64."""
    return json.loads(json.dumps(data), parse_int=float)


def _run(template: str, data: object) -> tuple[str | None, str | None]:
    try:
        tpl = parse(template)
    except TemplateError as e:
        return None, str(e)
    try:
        return tpl.execute(data), None
    except TemplateError as e:
        return e.partial, str(e)


@pytest.mark.parametrize("template,out,err", CASES1, ids=[c[0] for c in CASES1])
def test_matches_go_batch1(template, out, err):
    assert _run(template, _go_decode(DATA1)) == (out, err)


@pytest.mark.parametrize("template,out,err", CASES2, ids=[c[0] for c in CASES2])
def test_matches_go_batch2(template, out, err):
    assert _run(template, _go_decode(DATA2)) == (out, err)


# -- error messages named in the brief -----------------------------------------


def test_parse_error_messages():
    with pytest.raises(TemplateError) as e:
        parse("{{.Name")
    assert str(e.value) == "template parsing error: template: :1: unclosed action"
    assert e.value.go_error == "template: :1: unclosed action"
    assert e.value.parsing and isinstance(e.value, MachineError) and e.value.exit_code == 1
    with pytest.raises(TemplateError, match=r"^template parsing error: template: :1: unexpected \{\{end\}\}$"):
        parse("{{end}}")
    with pytest.raises(TemplateError, match='function "foo" not defined'):
        parse("{{foo .X}}")
    with pytest.raises(TemplateError, match=r'unexpected "\}" in operand'):
        parse("{{ .Name }")  # Go 1.19's wording, checked against Go


def test_exec_error_keeps_partial_output():
    with pytest.raises(TemplateError) as e:
        render("ok {{.Name.Foo}}", {"Name": "x"})
    assert e.value.partial == "ok "
    assert not e.value.parsing
    assert str(e.value) == (
        'template: :1:10: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type interface {}'
    )


def test_extra_funcs_can_be_left_out_like_docker_machine_ls():
    assert render("{{json .}}", [1]) == "[1]"
    with pytest.raises(TemplateError, match='function "json" not defined'):
        parse("{{json .}}", extra_funcs=False)


# -- Python objects behave like Go structs --------------------------------------


@dataclass
class HostListItem:
    Name: str
    Active: str
    DriverName: str
    State: str
    URL: str
    Swarm: str
    DockerVersion: str
    Error: str
    SwarmOptions: object = None

    def Upper(self, suffix: str) -> str:
        return self.Name.upper() + suffix


LS_DEFAULT = (
    "{{ .Name }}\t{{ .Active }}\t{{ .DriverName}}\t{{ .State }}\t{{ .URL }}\t{{ .Swarm }}"
    "\t{{ .DockerVersion }}\t{{ .Error}}\n"
)
LS_HEADERS = {
    "Name": "NAME", "Active": "ACTIVE", "ActiveHost": "ACTIVE_HOST", "ActiveSwarm": "ACTIVE_SWARM",
    "DriverName": "DRIVER", "State": "STATE", "URL": "URL", "SwarmOptions": "SWARM_OPTIONS",
    "Swarm": "SWARM", "EngineOptions": "ENGINE_OPTIONS", "Error": "ERRORS",
    "DockerVersion": "DOCKER", "ResponseTime": "RESPONSE",
}


def _item(name: str = "default", **kw: str) -> HostListItem:
    base = {'Name': name, 'Active': "-", 'DriverName': "virtualbox", 'State': "Running",
                'URL': "tcp://192.168.99.188:2376", 'Swarm': "", 'DockerVersion': "v1.9.1", 'Error': ""}
    base.update(kw)
    return HostListItem(**base)


def test_ls_default_table_matches_readme():
    tpl = parse(LS_DEFAULT)
    out = tabwrite(tpl.execute(LS_HEADERS) + tpl.execute(_item()))
    assert out.splitlines() == [
        "NAME      ACTIVE   DRIVER       STATE     URL                         SWARM   DOCKER   ERRORS",
        "default   -        virtualbox   Running   tcp://192.168.99.188:2376           v1.9.1   ",
    ]


def test_ls_custom_table_format_from_docker_machine_tests():
    tpl = parse("{{.Name}}: {{.DriverName}}\n")
    item = _item("testmachine", DriverName="none")
    assert tabwrite(tpl.execute(LS_HEADERS) + tpl.execute(item)) == "NAME: DRIVER\ntestmachine: none\n"


def test_struct_like_objects():
    item = _item()
    assert render("{{.SwarmOptions}}", item) == "<nil>"  # a typed nil pointer, as in Go
    assert render("{{.Upper \"!\"}}", item) == "DEFAULT!"
    assert render("{{\"?\" | .Upper}}", item) == "DEFAULT?"
    assert render("{{.ResponseTime}}", LS_HEADERS) == "RESPONSE"
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type HostListItem"):
        render("{{.Nope}}", item)
    with pytest.raises(TemplateError, match="Name has arguments but cannot be invoked"):
        render("{{.Name 1}}", item)


def test_root_nil_and_missing_sentinel():
    assert render("{{.}}|{{.X}}", None) == "<no value>|<no value>"
    assert go_sprint(MISSING) == "<no value>"


# -- value formatting ----------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [(0.0, "0"), (22.0, "22"), (1.5, "1.5"), (1e6, "1e+06"), (123456.0, "123456"),
     (1e-4, "0.0001"), (1e-5, "1e-05"), (-2.5e-7, "-2.5e-07"), (float("inf"), "+Inf"),
     (7, "7"), (True, "true"), (None, "<nil>"), ([1, None, "a"], "[1 <nil> a]"),
     ({"b": 1, "a": [True]}, "map[a:[true] b:1]"), ("s", "s")],
)
def test_go_sprint(value, expected):
    assert go_sprint(value) == expected


def test_go_json_compact_and_indented():
    v = {"b": [1.0, 2.5, {}], "a": "<&>\u2028\n\x01é", "c": None, "d": []}
    assert go_json(v) == '{"a":"\\u003c\\u0026\\u003e\\u2028\\n\\u0001é","b":[1,2.5,{}],"c":null,"d":[]}'
    assert go_json({"k": {"x": [1]}}, "    ") == (
        '{\n    "k": {\n        "x": [\n            1\n        ]\n    }\n}'
    )
    assert go_json(1e21) == "1e+21" and go_json(1e-7) == "1e-7" and go_json(1e20) == "100000000000000000000"


def test_prettyjson_uses_four_spaces_like_docker_machine():
    assert render("{{prettyjson .}}", {"A": 1}) == '{\n    "A": 1\n}'


def test_render_50_rows_is_fast():
    """ls runs this on every call; keep it well under the blink of an eye."""
    import time

    tpl = parse(LS_DEFAULT)
    items = [_item(f"host{i}") for i in range(50)]
    start = time.perf_counter()
    out = tabwrite(tpl.execute(LS_HEADERS) + "".join(tpl.execute(i) for i in items))
    elapsed = time.perf_counter() - start
    assert out.count("\n") == 51
    assert elapsed < 0.25, elapsed
