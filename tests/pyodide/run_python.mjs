// Runs Python code in Pyodide (the interpreter the browser uses) under Node, with pysrc/pocketlm
// mounted, so the standard-library-only package is tested on Pyodide's Python (3.14) too.
// Usage: node run_python.mjs <web dir> <pysrc dir> <python file>  — prints what the Python code prints.
import { readFileSync } from "node:fs";
import { startPyodide } from "./pyodide_env.mjs";

const [web, pysrc, script] = process.argv.slice(2);
const pyodide = await startPyodide(web, pysrc);
try {
  await pyodide.runPythonAsync(readFileSync(script, "utf8"));
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
