// Types of the modules a stage imports that TypeScript cannot see: the host
// (provided to the component at run time) and node's test runner (unit tests).
declare module "traptor:plugin/host@{{abi}}" {
  export type Level = "trace" | "debug" | "info" | "warn" | "error";
  /** A structured log record, attributed to the stage by the host. */
  export function log(level: Level, message: string, fields: [string, string][]): void;
  /** Add `delta` to the stage's counter `name`. */
  export function counter(name: string, delta: bigint): void;
}

declare module "node:test" {
  export function test(name: string, fn: () => void | Promise<void>): void;
}

declare module "node:assert/strict" {
  const assert: {
    equal(actual: unknown, expected: unknown, message?: string): void;
    deepEqual(actual: unknown, expected: unknown, message?: string): void;
    ok(value: unknown, message?: string): void;
    throws(fn: () => unknown, expected?: RegExp): void;
  };
  export default assert;
}
