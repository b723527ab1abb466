// Schedules do not exist yet (issue 15, "Control over when and how fast"): this page is the
// place they will go (next fires, pause, trigger) and says so, rather than show anything made up.

import { h, fill } from "../dom";
import type { Page } from "../page";

export function schedulesPage(page: Page): void {
  fill(
    page.root,
    h("h1", null, "Schedules"),
    h(
      "p",
      { class: "note", id: "schedules-absent" },
      "This server has no schedules: they arrive with issue 15. When they do, this page lists each schedule's next fires with pause and trigger.",
    ),
  );
}
