/**
 * The ES module entry of @jobwire/client (`import`): the CommonJS build's exports, re-exported.
 * There is one copy of the code, so `import` and `require` in one program share the same classes
 * (an `instanceof RpcError` holds whichever way the error's module was loaded).
 */
export * from "./index.js";
