from assynch.cli import app

app(prog_name="assynch")
