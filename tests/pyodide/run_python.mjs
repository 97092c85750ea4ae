// Runs Python code in Pyodide (the interpreter the browser uses) under Node, with pysrc/pocketlm
// mounted, so the standard-library-only package is tested on Pyodide's Python (3.14) too.
// Usage: node run_python.mjs <web dir> <pysrc dir> <python file>  — prints what the Python code prints.
// Pyodide comes from <web dir>/node_modules (pinned by web/package-lock.json); nothing is downloaded.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";

const [web, pysrc, script] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(join(web, "node_modules", "pyodide", "pyodide.mjs")).href);
const pyodide = await loadPyodide();

function mount(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const target = "/pysrc/" + relative(pysrc, path);
    if (statSync(path).isDirectory()) {
      if (name !== "__pycache__") {
        pyodide.FS.mkdirTree(target);
        mount(path);
      }
    } else if (name.endsWith(".py")) {
      pyodide.FS.writeFile(target, readFileSync(path));
    }
  }
}
pyodide.FS.mkdirTree("/pysrc");
mount(pysrc);
pyodide.setStdout({ batched: (line) => console.log(line) });
pyodide.setStderr({ batched: (line) => console.error(line) });
try {
  await pyodide.runPythonAsync("import sys; sys.path.insert(0, '/pysrc')\n" + readFileSync(script, "utf8"));
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
