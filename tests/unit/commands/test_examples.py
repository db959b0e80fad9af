"""`sky-mithril examples`: the task YAMLs the wheel ships, listed and written
out, so a pip user has `hello.yaml` without a checkout."""

from pathlib import Path

from sky_mithril.catalog import catalog_files

REPO = Path(__file__).resolve().parents[3]


def test_the_list_names_each_example_and_what_it_shows(run):
    result = run('examples')
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ['NAME', 'WHAT', 'IT', 'SHOWS']
    names = [line.split()[0] for line in lines[1:] if line.strip()][:-1]
    assert names == [p.stem for p in sorted((REPO / 'examples').glob('*.yaml'))]
    assert 'hello          Hello, Mithril: one node, with the limit price you choose' in lines
    assert lines[-1] == 'Write one out: `sky-mithril examples hello > hello.yaml`.'


def test_an_example_is_written_out_as_shipped(run):
    shipped = (REPO / 'examples' / 'hello.yaml').read_text()
    assert run('examples', 'hello').out == shipped
    assert run('examples', 'hello.yaml').out == shipped


def test_an_unknown_example_names_those_there_are(run):
    result = run('examples', 'helo')
    assert result.code == 1
    assert result.err == ("sky-mithril examples: No example 'helo'; there are: hello, "
                          'managed-train, multi-node, patient-batch, serve.\n')


def test_an_installed_wheel_reads_its_own_copy(run, tmp_path, monkeypatch):
    packaged = tmp_path / 'data' / 'examples'
    packaged.mkdir(parents=True)
    (packaged / 'hello.yaml').write_text('# Hello from the wheel.\nname: hello\n')
    monkeypatch.setattr(catalog_files, '_PACKAGED_EXAMPLES', packaged)
    assert catalog_files.example_names() == ['hello.yaml']
    assert run('examples', 'hello').out == '# Hello from the wheel.\nname: hello\n'


def test_the_wheel_ships_the_examples():
    pyproject = (REPO / 'pyproject.toml').read_text()
    assert '"examples" = "sky_mithril/data/examples"' in pyproject
