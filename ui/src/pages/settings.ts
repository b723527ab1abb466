// A queue's settings on its page: what is set for the queue and what is in effect (the server's
// flags for the rest), from GetQueueSettings; for a token that may act, a form that changes them
// with SetQueueSettings, where an emptied field is cleared (the flag applies again) and the
// server's INVALID_ARGUMENT shows next to the field it names.
//
// The form is drawn from QueueSettings' descriptor, not from a list kept here: every scalar,
// enum and Duration field (and those of a nested message, such as backoff's) gets a row, so a
// setting added to the proto shows once the page is rebuilt. Durations are typed as `30s`,
// `1h30m`, `250ms`. The section starts closed; settings make no queue event, so they are read
// each time it is opened and after each change.

import { create, ScalarType, type DescField, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { h, fill } from "../dom";
import { describe, invalidField, mayAct, queues } from "../api";
import { parseSpan, span } from "../format";
import { fail, say } from "../page";
import { QueueSettingsSchema, type QueueSettings } from "../gen/jobwire/v1/jobwire_pb";

const DURATION = "google.protobuf.Duration";

/** One editable leaf of the settings: its path (`backoff.base`) and where it sits. */
interface Leaf {
  /** The proto field names from the top, joined by dots, as the server names them. */
  path: string;
  /** The top-level field it belongs to: what SetQueueSettings clears. */
  top: string;
  /** Its descriptor. */
  field: DescField;
  /** The local names from the top, to read and write it in a message object. */
  locals: string[];
}

/** Every leaf of `message`: scalars, enums and Durations, nested messages flattened. */
function leaves(message: DescMessage, prefix: string[] = [], locals: string[] = [], top = ""): Leaf[] {
  const out: Leaf[] = [];
  for (const field of message.fields) {
    const path = [...prefix, field.name];
    const at = [...locals, field.localName];
    const owner = top || field.name;
    if (field.fieldKind === "scalar" || field.fieldKind === "enum") {
      out.push({ path: path.join("."), top: owner, field, locals: at });
    } else if (field.fieldKind === "message") {
      if (field.message.typeName === DURATION) out.push({ path: path.join("."), top: owner, field, locals: at });
      else out.push(...leaves(field.message, path, at, owner));
    }
    // Lists and maps have no row: no queue setting is one today; the CLI sets any.
  }
  return out;
}

type Bag = Record<string, unknown>;

function read(message: unknown, locals: string[]): unknown {
  let value: unknown = message;
  for (const name of locals) {
    if (value === undefined || value === null) return undefined;
    value = (value as Bag)[name];
  }
  return value;
}

/** A leaf's value as the form shows it; empty when unset. */
function show(leaf: Leaf, value: unknown): string {
  if (value === undefined || value === null) return "";
  const f = leaf.field;
  if (f.fieldKind === "message") return span(value as { seconds: bigint; nanos: number });
  if (f.fieldKind === "enum") {
    if (value === 0) return "";
    const entry = f.enum.values.find((v) => v.number === value);
    return entry ? entryName(f.enum.name, entry.name) : String(value);
  }
  return String(value);
}

/** `BACKOFF_KIND_FIXED` as `fixed`. */
function entryName(enumName: string, valueName: string): string {
  const prefix = enumName.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() + "_";
  return (valueName.startsWith(prefix) ? valueName.slice(prefix.length) : valueName).toLowerCase();
}

/** The typed text of a leaf as its wire value, or why it is not one. */
function parse(leaf: Leaf, text: string): { value: unknown } | { error: string } {
  const f = leaf.field;
  if (f.fieldKind === "message") {
    const d = parseSpan(text);
    return d ? { value: d } : { error: "a duration such as 30s, 1h30m or 250ms" };
  }
  if (f.fieldKind === "enum") {
    const entry = f.enum.values.find((v) => entryName(f.enum.name, v.name) === text);
    return entry ? { value: entry.number } : { error: "one of the choices" };
  }
  switch (f.scalar) {
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT: {
      const n = Number(text);
      return Number.isFinite(n) && text !== "" ? { value: n } : { error: "a number" };
    }
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return /^\d+$/.test(text) ? { value: BigInt(text) } : { error: "a whole number, 0 or more" };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return /^-?\d+$/.test(text) ? { value: BigInt(text) } : { error: "a whole number" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32: {
      const n = Number(text);
      return /^\d+$/.test(text) && n <= 0xffff_ffff ? { value: n } : { error: "a whole number, 0 to 4294967295" };
    }
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32: {
      const n = Number(text);
      return /^-?\d+$/.test(text) && Math.abs(n) <= 0x7fff_ffff ? { value: n } : { error: "a whole number" };
    }
    case ScalarType.BOOL:
      return text === "true" || text === "false" ? { value: text === "true" } : { error: "true or false" };
    default:
      return { value: text };
  }
}

function write(bag: Bag, locals: string[], value: unknown): void {
  let at = bag;
  for (const name of locals.slice(0, -1)) {
    at[name] ??= {};
    at = at[name] as Bag;
  }
  const last = locals[locals.length - 1];
  if (last !== undefined) at[last] = value;
}

/** The id of a leaf's input and of its error line. */
function ids(leaf: Leaf): { input: string; error: string } {
  const id = leaf.path.replace(/\./g, "-");
  return { input: `setting-${id}`, error: `setting-${id}-error` };
}

/**
 * The settings section of `queue`'s page; it draws itself into the element it returns, and
 * calls `saved` after each change (the page's figures show the concurrency cap).
 */
export function settingsSection(queue: string, signal: AbortSignal, saved: () => void): HTMLElement {
  const all = leaves(QueueSettingsSchema);
  const body = h("div", null, h("p", null, "Loading settings…"));
  const summary = h("summary", null, "Settings");
  const section = h("details", { class: "settings", id: "settings" }, summary, body);

  const draw = (settings: QueueSettings | undefined, effective: QueueSettings | undefined) => {
    const editable = mayAct();
    const setCount = QueueSettingsSchema.fields.filter((f) => read(settings, [f.localName]) !== undefined).length;
    summary.textContent = `Settings (${setCount} set for this queue)`;
    const inputs = new Map<Leaf, HTMLInputElement | HTMLSelectElement>();
    const errors = new Map<string, HTMLElement>();
    const rows = all.map((leaf) => {
      const current = show(leaf, read(settings, leaf.locals));
      const { input: inputId, error: errorId } = ids(leaf);
      const error = h("span", { class: "error-text field-error", id: errorId, role: "alert" });
      errors.set(leaf.path, error);
      let cell: HTMLElement;
      if (!editable) {
        cell = h("span", { id: inputId }, current || "—");
      } else if (leaf.field.fieldKind === "enum") {
        const enumDesc = leaf.field.enum;
        const select = h(
          "select",
          { id: inputId, name: leaf.path, "aria-describedby": errorId },
          h("option", { value: "" }, "(not set)"),
          enumDesc.values.filter((v) => v.number !== 0).map((v) => {
            const name = entryName(enumDesc.name, v.name);
            return h("option", { value: name, selected: name === current }, name);
          }),
        );
        inputs.set(leaf, select);
        cell = select;
      } else {
        const input = h("input", {
          id: inputId,
          name: leaf.path,
          value: current,
          placeholder: "not set",
          maxlength: 64,
          "aria-describedby": errorId,
        });
        inputs.set(leaf, input);
        cell = input;
      }
      return h(
        "tr",
        null,
        h("th", { scope: "row" }, h("label", { for: inputId }, leaf.path)),
        h("td", null, cell, " ", error),
        h("td", { "data-effective": leaf.path }, show(leaf, read(effective, leaf.locals)) || "no limit"),
      );
    });
    const grid = h(
      "div",
      { class: "table-box" },
      h(
        "table",
        null,
        h("caption", null, editable ? "Empty a field to fall back to the server's flag." : "Set for this queue, and in effect."),
        h("thead", null, h("tr", null, h("th", { scope: "col" }, "setting"), h("th", { scope: "col" }, "set for this queue"), h("th", { scope: "col" }, "in effect"))),
        h("tbody", null, rows),
      ),
    );
    if (!editable) {
      fill(body, grid);
      return;
    }
    const form = h(
      "form",
      {
        id: "settings-form",
        onsubmit: (event: Event) => {
          event.preventDefault();
          void save(settings, inputs, errors);
        },
      },
      grid,
      h("p", null, h("button", { type: "submit", id: "settings-save" }, "Save settings")),
    );
    fill(body, form);
  };

  const save = async (
    before: QueueSettings | undefined,
    inputs: Map<Leaf, HTMLInputElement | HTMLSelectElement>,
    errors: Map<string, HTMLElement>,
  ) => {
    for (const e of errors.values()) e.textContent = "";
    const bag: Bag = {};
    const given = new Set<string>();
    let wrong = false;
    for (const [leaf, input] of inputs) {
      const text = input.value.trim();
      if (text === "") continue;
      const parsed = parse(leaf, text);
      if ("error" in parsed) {
        const line = errors.get(leaf.path);
        if (line) line.textContent = `must be ${parsed.error}`;
        wrong = true;
        continue;
      }
      write(bag, leaf.locals, parsed.value);
      given.add(leaf.top);
    }
    if (wrong) {
      say("Some settings do not read: see the fields marked.", "error");
      return;
    }
    // A setting the queue holds whose every field was emptied falls back to the flag.
    const clear = QueueSettingsSchema.fields
      .filter((f) => read(before, [f.localName]) !== undefined && !given.has(f.name))
      .map((f) => f.name);
    try {
      const settings = create(QueueSettingsSchema, bag as MessageInitShape<typeof QueueSettingsSchema>);
      const answer = await queues.setQueueSettings({ queue, settings, clear });
      say(`Settings of ${queue} saved: every instance applies them within a second.`);
      draw(answer.settings, answer.effective);
      saved();
    } catch (error) {
      const named = invalidField(error);
      const line = named && errors.get(named.field.replace(/^settings\./, ""));
      if (named && line) {
        line.textContent = named.reason;
        say(`Not saved: ${describe(error)}`, "error");
      } else {
        fail(error);
      }
    }
  };

  const load = async () => {
    try {
      const answer = await queues.getQueueSettings({ queue }, { signal });
      draw(answer.settings, answer.effective);
    } catch (error) {
      if (signal.aborted) return;
      fill(body, h("p", { class: "error-text" }, `Settings not read: ${describe(error)}`));
    }
  };
  // Read when opened (each time: a closed section shows nothing that could be stale).
  section.addEventListener("toggle", () => {
    if (section.open) void load();
  });
  return section;
}
