// Build the agent page into the Python package (splitmq/web/static/): the bundle
// (esbuild, minified, ES module), the page, the calibration net, and only the LiteRT.js
// wasm builds the page chooses between (src/runtime.js, chooseBuild): the default build,
// the threaded one for a cross-origin isolated page, and the "compat" one for browsers
// without relaxed SIMD. The JSPI build (WebNN, WebGPU partitioning) is never asked for.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, '..', 'splitmq', 'web', 'static');
const wasmSource = path.join(here, 'node_modules', '@litertjs', 'core', 'wasm');
export const WASM_FILES = [
  'litert_wasm_internal.js',
  'litert_wasm_internal.wasm',
  'litert_wasm_threaded_internal.js',
  'litert_wasm_threaded_internal.wasm',
  'litert_wasm_compat_internal.js',
  'litert_wasm_compat_internal.wasm',
];

const litert = JSON.parse(readFileSync(path.join(here, 'node_modules', '@litertjs', 'core', 'package.json'), 'utf-8'));
const own = JSON.parse(readFileSync(path.join(here, 'package.json'), 'utf-8'));

mkdirSync(out, { recursive: true });
rmSync(path.join(out, 'wasm'), { recursive: true, force: true });
mkdirSync(path.join(out, 'wasm'));

await build({
  entryPoints: [path.join(here, 'src', 'page.js')],
  outfile: path.join(out, 'agent.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  define: {
    __LITERT_VERSION__: JSON.stringify(litert.version),
    __SPLITMQ_WEB_VERSION__: JSON.stringify(own.version),
  },
  logLevel: 'warning',
});
copyFileSync(path.join(here, 'src', 'agent.html'), path.join(out, 'agent.html'));
copyFileSync(path.join(here, '..', 'splitmq', 'agent', 'calibration.tflite'), path.join(out, 'calibration.tflite'));
for (const name of WASM_FILES) copyFileSync(path.join(wasmSource, name), path.join(out, 'wasm', name));

const size = (file) => statSync(path.join(out, file)).size;
const bundle = size('agent.js');
const wasm = WASM_FILES.filter((f) => f.startsWith('litert_wasm_internal')).reduce((sum, f) => sum + size(path.join('wasm', f)), 0);
console.log(`splitmq/web/static: agent.js ${(bundle / 1024).toFixed(0)} KiB; the default wasm build ${(wasm / 2 ** 20).toFixed(2)} MiB`);
