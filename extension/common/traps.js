// A trap in the wasm module that no panic announced (running out of memory; its stack
// overflowing, which comes as an access out of bounds of its memory) leaves the module as unusable as a panic does, but the panic hook never runs: the
// trap comes out as a `WebAssembly.RuntimeError` thrown from whatever call into the module was
// running, most often a task of its async executor, where nothing catches it.
import { stoppedByTrap } from './pkg/disot_wasm.js';

/**
 * Whether `error` is a trap of a wasm module, or the engine's stack overflowing in the module
 * (V8 and Firefox name that error differently, and JS code can overflow it too: only one
 * thrown with the module's frames on the stack counts). Either leaves the module's own state
 * half-changed.
 */
export const isTrap = (error) => error instanceof WebAssembly.RuntimeError
  || (((error instanceof RangeError && /call stack/i.test(error.message))
    || (error?.name === 'InternalError' && /recursion/i.test(error.message)))
    && /wasm-function|\.wasm:/.test(String(error.stack)));

let restoreStack = () => {};

/**
 * Note, with nothing running in it, where the module's own stack starts (`exports`: what its
 * `init` resolved to), so that it can be put back there after a trap: an overflow leaves the
 * stack pointer past the stack's end, where even asking the module who it blames would trap.
 */
export function noteStack(exports) {
  const move = exports?.__wbindgen_add_to_stack_pointer;
  if (typeof move !== 'function') return;
  const start = move(0);
  restoreStack = () => move(start - move(0));
}

/**
 * Call `report(message, blamed)` for each trap that reaches this context's top level, as an
 * uncaught exception or an unhandled rejection, and for each one handed to the function this
 * returns (a trap caught on the way). The module is first marked stopped, so that the panics
 * that may follow (its tasks finding their state still borrowed) say nothing; `blamed` is the
 * saved document it was loading, if one was and the module can still say.
 */
export function onTrap(report) {
  const seen = (error) => {
    if (!isTrap(error)) return false;
    let blamed;
    try {
      restoreStack();
      blamed = stoppedByTrap();
    } catch {
      blamed = undefined;
    }
    report(`${error.name}: ${error.message}`, blamed);
    return true;
  };
  // Handled here: not reported again as an error (a worker's would reach its owner too, as
  // an error event, maybe before the report).
  addEventListener('error', (e) => seen(e.error) && e.preventDefault());
  addEventListener('unhandledrejection', (e) => seen(e.reason) && e.preventDefault());
  return seen;
}
