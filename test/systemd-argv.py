"""
systemd-argv.py UNIT_FILE: the argv systemd runs for the unit's ExecStart=, each word
followed by a NUL byte, as this machine's systemd reads the unit.

systemd is not PID 1 here, so nothing can start a unit. `systemd --test` (the manager itself,
in its dry-run mode) loads the unit instead and dumps its command line: blanks, quotes, C
escapes and %-specifiers are all systemd's own work. Two steps stand in for it:
- the dump shows each word quoted for a shell (", \\, ` and $ behind a backslash, control
  characters C-escaped, as systemd's shell_maybe_quote() writes them): undone here;
- systemd replaces $VARIABLES only when it starts the command ("$$" is a literal "$",
  systemd.service(5)): a word here may hold "$" only as "$$", which becomes "$".
Any complaint systemd makes about the unit file is an error.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

WORD = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\s"]+)')
ESCAPE = re.compile(rb'\\([0-7]{3}|.)')
C_ESCAPES = {b'a': b'\a', b'b': b'\b', b'f': b'\f', b'n': b'\n', b'r': b'\r', b't': b'\t', b'v': b'\v'}


def fail(message):
    sys.stderr.write(f'systemd-argv.py: {message}\n')
    sys.exit(1)


def unescape(match):
    code = match.group(1)
    if len(code) == 3:
        return bytes([int(code, 8)])
    if code in C_ESCAPES:
        return C_ESCAPES[code]
    if code in b'"\\`$\'':
        return code
    fail(f'unexpected escape \\{code.decode()} in the dump')


def dump(unit_file):
    """systemd's dump of the unit, loaded from a directory of its own beside the system's units."""
    systemd = next((p for p in ('/usr/lib/systemd/systemd', '/lib/systemd/systemd') if os.access(p, os.X_OK)), None)
    if not systemd:
        fail('systemd is not installed: apt-get install systemd')
    name = os.path.basename(unit_file)
    with tempfile.TemporaryDirectory() as units, tempfile.TemporaryDirectory() as none:
        os.chmod(units, 0o755)
        shutil.copyfile(unit_file, os.path.join(units, name))
        os.chmod(os.path.join(units, name), 0o644)
        # No generators: they would only add units, and run as this user.
        env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'HOME': '/', 'SYSTEMD_UNIT_PATH': units + ':', 'SYSTEMD_GENERATOR_PATH': none, 'SYSTEMD_ENVIRONMENT_GENERATOR_PATH': none}
        command = [systemd, '--test', '--system', f'--unit={name}', '--log-target=console']
        if os.geteuid() == 0:
            # systemd refuses its test mode to root.
            command = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', *command]
        run = subprocess.run(command, env=env, capture_output=True, cwd='/')
    complaints = [line for line in run.stderr.decode(errors='replace').splitlines() if name in line]
    if run.returncode != 0 or complaints:
        fail(f'systemd --test on {name}: ' + ('\n'.join(complaints) or run.stderr.decode(errors='replace')))
    return name, run.stdout.split(b'\n')


def command_line(name, lines):
    """The one ExecStart= command line of the unit, as the dump shows it."""
    header = f'\t-> Unit {name}:'.encode()
    if header not in lines:
        fail(f'{name} is not in the dump')
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(b'\t-> Unit ')), len(lines))
    prefix = b'\t\t\tCommand Line: '
    found = [lines[i + 1][len(prefix):] for i in range(start, end - 1) if lines[i] == b'\t\t-> ExecStart:' and lines[i + 1].startswith(prefix)]
    if len(found) != 1:
        fail(f'{name} has {len(found)} ExecStart= command lines in the dump, not one')
    return found[0]


def words(line):
    matches = list(WORD.finditer(line))
    if b' '.join(m.group(0) for m in matches) != line:
        fail(f'cannot read the dumped command line {line!r}')
    shown = [ESCAPE.sub(unescape, m.group(1)) if m.group(2) is None else m.group(2) for m in matches]
    for word in shown:
        if not re.fullmatch(rb'(?:[^$]|\$\$)*', word, re.S):
            fail(f'{word!r} holds a $VARIABLE that systemd would replace')
    return [word.replace(b'$$', b'$') for word in shown]


if __name__ == '__main__':
    if len(sys.argv) != 2:
        fail('usage: systemd-argv.py UNIT_FILE')
    name, lines = dump(sys.argv[1])
    sys.stdout.buffer.write(b''.join(word + b'\0' for word in words(command_line(name, lines))))
