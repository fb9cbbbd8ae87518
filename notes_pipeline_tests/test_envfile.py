"""The KEY=VALUE reader shared by conftest, the synthetic CLI and the benchmarks."""

from notes_pipeline.core.envfile import read_env_file, stack_env_file


def test_reads_values_and_skips_comments_blank_lines_and_noise(tmp_path):
    path = tmp_path / "env"
    path.write_text(
        "# generated\n\nA=1\nexport B = two \nC='quoted value'\nD=\"x=y\"\nnot a pair\nE=\n"
    )
    assert read_env_file(path) == {"A": "1", "B": "two", "C": "quoted value", "D": "x=y", "E": ""}


def test_stack_env_file_follows_the_stack_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTES_PIPELINE_STACK_DIR", raising=False)
    assert stack_env_file(tmp_path) == tmp_path / ".stack" / "env"
    monkeypatch.setenv("NOTES_PIPELINE_STACK_DIR", str(tmp_path / "other"))
    assert stack_env_file(tmp_path) == tmp_path / "other" / "env"
