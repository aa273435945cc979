from authproxy.config.env import substitute

ENV = {"HOST": "up.internal", "EMPTY": "", "SECRET": "p:a#s s"}


def test_plain_and_default():
    result = substitute({"a": "http://${HOST}:80", "b": "${MISSING:-fallback}", "c": "${EMPTY:-d}"}, ENV)
    assert result.document == {"a": "http://up.internal:80", "b": "fallback", "c": "d"}
    assert result.issues == []
    assert result.from_env == {"a", "b", "c"}


def test_yaml_syntax_in_values_stays_a_string():
    result = substitute({"s": ["${SECRET}"]}, ENV)
    assert result.document == {"s": ["p:a#s s"]}
    assert result.from_env == {"s[0]"}


def test_unset_variable_is_an_error_naming_it_and_the_path():
    result = substitute({"routes": [{"upstream": "${NOPE}"}]}, ENV)
    assert len(result.issues) == 1
    issue = result.issues[0]
    assert issue.path == "routes[0].upstream"
    assert "NOPE" in issue.message


def test_escape_and_malformed():
    assert substitute({"a": "$${HOST}"}, ENV).document == {"a": "${HOST}"}
    result = substitute({"a": "${1BAD}"}, ENV)
    assert result.issues and "malformed" in result.issues[0].message


def test_non_strings_untouched():
    assert substitute({"n": 3, "b": True, "x": None}, ENV).document == {"n": 3, "b": True, "x": None}
