// The dashboard's entry: the frame (navigation, token field, message line) and the router.
// Routes live in the URL's hash (#/queue/emails?state=dead), so every view can be linked, the
// back button works and the server serves one page. Leaving a page aborts its signal: its
// streams and timers stop.

import { h, fill } from "./dom";
import { setToken, token } from "./api";
import { say, type Page } from "./page";
import { overview } from "./pages/overview";
import { queuePage } from "./pages/queue";
import { jobPage } from "./pages/job";
import { workersPage } from "./pages/workers";
import { deadPage } from "./pages/dead";
import { sessionPage, sessionsPage } from "./pages/sessions";
import { schedulesPage } from "./pages/schedules";

const PAGES: Record<string, (page: Page) => void> = {
  "": overview,
  queue: queuePage,
  job: jobPage,
  workers: workersPage,
  dead: deadPage,
  sessions: sessionsPage,
  session: sessionPage,
  schedules: schedulesPage,
};

function frame(): HTMLElement {
  const tokenInput = h("input", {
    type: "password",
    id: "token",
    autocomplete: "off",
    placeholder: "API token (kept for this tab)",
    "aria-label": "API token",
    value: token(),
  });
  tokenInput.addEventListener("change", () => {
    setToken(tokenInput.value.trim());
    say(tokenInput.value ? "Token set for this tab." : "Token cleared.");
    route();
  });
  const main = h("main", { id: "main", tabindex: -1 });
  document.body.replaceChildren(
    h("a", { href: "#main", class: "skip" }, "Skip to content"),
    h(
      "header",
      null,
      h("a", { href: "#/", class: "brand" }, "jobwire"),
      h(
        "nav",
        { "aria-label": "Pages" },
        h("a", { href: "#/" }, "Overview"),
        h("a", { href: "#/workers" }, "Workers"),
        h("a", { href: "#/schedules" }, "Schedules"),
      ),
      tokenInput,
    ),
    h("p", { id: "message", role: "status", "aria-live": "polite", hidden: true }),
    main,
  );
  return main;
}

let current: AbortController | undefined;

function route(): void {
  current?.abort();
  current = new AbortController();
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path = "", query = ""] = hash.split("?", 2);
  const [name = "", ...rest] = path.split("/");
  const render = PAGES[name];
  const main = document.getElementById("main") ?? frame();
  say("");
  if (!render) {
    fill(main, h("h1", null, "Not found"), h("p", null, "No such page."));
    return;
  }
  render({
    root: main,
    signal: current.signal,
    path: rest.length ? [decodeURIComponent(rest.join("/"))] : [],
    params: new URLSearchParams(query),
  });
}

frame();
window.addEventListener("hashchange", route);
route();
