"""The `mlwarden` command line: flags, MLWARDEN_* variables, errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden import cli
from mlwarden.sidecar.config import SidecarConfig


def sidecar_args(*extra: str) -> list[str]:
    return ["sidecar", "--listen", "127.0.0.1:8000", "--upstream", "http://127.0.0.1:8080",
            *extra]  # fmt: skip


def config_for(argv: list[str]) -> SidecarConfig:
    return cli._sidecar_config(cli.build_parser().parse_args(argv))


def test_flags_become_a_config() -> None:
    c = config_for(sidecar_args("--collector", "http://detector:8080/", "--sample-rate", "0.5"))
    assert c.listen == ("127.0.0.1", 8000)
    assert c.records_url == "http://detector:8080/v1/records"
    assert c.sample_rate == 0.5 and c.protocol == "auto" and c.max_body_bytes == 1 << 20
    assert (c.drain_seconds, c.shutdown_timeout_seconds) == (5.0, 10.0)


def test_every_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLWARDEN_LISTEN", "[::1]:9000")
    monkeypatch.setenv("MLWARDEN_UPSTREAM", "http://127.0.0.1:7000")
    monkeypatch.setenv("MLWARDEN_SAMPLE_RATE", "0.25")
    monkeypatch.setenv("MLWARDEN_PROTOCOL", "openai")
    c = config_for(["sidecar"])
    assert c.listen == ("::1", 9000) and c.upstream == "http://127.0.0.1:7000"
    assert (c.sample_rate, c.protocol) == (0.25, "openai")
    monkeypatch.setenv("MLWARDEN_DRAIN_SECONDS", "2")  # the operator sets both from the pod
    monkeypatch.setenv("MLWARDEN_SHUTDOWN_TIMEOUT", "19")
    assert (c := config_for(["sidecar"])).drain_seconds == 2.0
    assert c.shutdown_timeout_seconds == 19.0
    # A flag on the command line wins over the variable.
    assert config_for(["sidecar", "--sample-rate", "1"]).sample_rate == 1.0


def test_the_model_revision_comes_from_the_flag_or_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert config_for(sidecar_args()).model_revision is None
    monkeypatch.setenv("MLWARDEN_MODEL_REVISION", "7c9f5d")  # the operator's Downward API value
    assert config_for(sidecar_args()).model_revision == "7c9f5d"
    assert config_for(sidecar_args("--model-revision", "canary")).model_revision == "canary"
    with pytest.raises(ValueError, match="--model-revision: must be 1 to 128 printable"):
        config_for(sidecar_args("--model-revision", "x" * 129))


def test_the_manifest_sets_capture_unless_a_flag_overrides_it(tmp_path: Path) -> None:
    manifest = tmp_path / "om.yaml"
    manifest.write_text(
        "apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\nmetadata: {name: m}\n"
        "spec:\n  target: {deployment: m}\n  protocol: v1\n"
        "  capture: {sampleRate: 0.1, maxBodyBytes: 4096}\n"
    )
    c = config_for(sidecar_args("--observed-model", str(manifest)))
    assert (c.protocol, c.sample_rate, c.max_body_bytes) == ("v1", 0.1, 4096)
    c = config_for(sidecar_args("--observed-model", str(manifest), "--sample-rate", "0.9"))
    assert (c.protocol, c.sample_rate) == ("v1", 0.9)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sidecar", "--listen", "8000", "--upstream", "http://x:1"],
            "--listen: expected HOST:PORT",
        ),
        ([*sidecar_args()[:3], "--upstream", "x:1"], "--upstream: expected an http"),
        (sidecar_args("--protocol", "grpc"), "--protocol: must be one of"),
        (sidecar_args("--sample-rate", "2"), "--sample-rate: must be in [0, 1]"),
        (sidecar_args("--drain-seconds", "-1"), "--drain-seconds: must be 0 or more"),
        (sidecar_args("--shutdown-timeout", "0"), "--shutdown-timeout: must be a positive"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLWARDEN_SAMPLE_RATE", "lots")
    assert cli.main(sidecar_args()) == 2
    assert "MLWARDEN_SAMPLE_RATE='lots': not a valid float" in capsys.readouterr().err


def test_a_bad_manifest_lists_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "om.yaml"
    manifest.write_text("apiVersion: mlwarden.io/v1alpha1\nkind: ObservedModel\nspec: {}\n")
    assert cli.main(sidecar_args("--observed-model", str(manifest))) == 2
    err = capsys.readouterr().err
    assert "metadata.name: required field is missing" in err
    assert "spec.target.name: is required: the workload's name" in err


def test_operator_flags_parse() -> None:
    args = cli.build_parser().parse_args(
        ["operator", "-n", "a", "--namespace", "b", "--standalone", "--priority", "7"]
    )
    assert (args.namespace, args.standalone, args.priority) == (["a", "b"], True, 7)
    args = cli.build_parser().parse_args(["operator", "--all-namespaces"])
    assert (args.namespace, args.all_namespaces, args.priority) == ([], True, None)
