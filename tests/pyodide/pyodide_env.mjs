// Start Pyodide (from <web>/node_modules, pinned by web/package-lock.json; nothing is downloaded)
// under Node with pysrc/ mounted at /pysrc and on sys.path.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";

export async function startPyodide(web, pysrc) {
  const { loadPyodide } = await import(pathToFileURL(join(web, "node_modules", "pyodide", "pyodide.mjs")).href);
  const pyodide = await loadPyodide();
  const mount = (dir) => {
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
  };
  pyodide.FS.mkdirTree("/pysrc");
  mount(pysrc);
  pyodide.setStdout({ batched: (line) => console.log(line) });
  pyodide.setStderr({ batched: (line) => console.error(line) });
  await pyodide.runPythonAsync("import sys; sys.path.insert(0, '/pysrc')");
  return pyodide;
}
