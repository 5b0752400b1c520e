// Firmware: the named files devices download. Uploads stream the file as the request body.

import { api, isAbort, part } from "./api.js";
import { byteSize, confirmButton, h, notify, replace } from "./dom.js";

export function firmwarePage(main, { me }) {
  document.title = "Firmware · m2m";
  const controller = new AbortController();
  const signal = controller.signal;
  const body = h("tbody");
  const problem = h("p", { class: "form-error", role: "alert" });
  const file = h("input", { id: "firmware-file", type: "file", required: true });
  const name = h("input", { id: "firmware-name", required: true, autocomplete: "off", spellcheck: "false" });
  const upload = h("button", { type: "submit", class: "button-primary" }, "Upload");
  let suggested = "";

  file.addEventListener("change", () => {
    const chosen = file.files[0];
    if (chosen && (name.value === "" || name.value === suggested)) {
      suggested = chosen.name;
      name.value = chosen.name;
    }
  });

  replace(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Firmware")),
    me.admin && h(
      "form",
      { class: "card inline-form", "aria-label": "Upload firmware", onsubmit: send },
      h("div", { class: "field grow" }, h("label", { for: "firmware-file" }, "File"), file),
      h("div", { class: "field grow" }, h("label", { for: "firmware-name" }, "Name"), name),
      upload,
    ),
    problem,
    h(
      "div",
      { class: "card table-card" },
      h("div", { class: "table-scroll" },
        h("table", { class: "table", "aria-label": "Firmware" },
          h("thead", {}, h("tr", {}, ["Name", "Size", "Id", ""].map((n) => h("th", { scope: "col" }, n)))),
          body)),
    ),
  );

  async function load() {
    try {
      const answer = await api("/firmware", { signal });
      const items = Array.isArray(answer) ? answer : answer.firmware ?? [];
      problem.textContent = "";
      if (!items.length) {
        replace(body, h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No firmware yet.")));
        return;
      }
      replace(body, items.map((item) => {
        const url = `/api/v1/firmware/${part(item.name)}`;
        return h("tr", { dataset: { firmware: item.name } },
          h("th", { scope: "row", class: "mono" }, item.name),
          h("td", { class: "nowrap" }, byteSize(item.size)),
          h("td", { class: "mono muted small" }, item.id ?? "—"),
          h("td", { class: "actions" },
            h("a", { class: "button button-quiet small", href: url, download: item.name,
              "aria-label": `Download ${item.name}` }, "Download"),
            me.admin && confirmButton("Delete", "Really delete?", () => remove(item.name),
              { "aria-label": `Delete ${item.name}` })));
      }));
    } catch (error) {
      if (!isAbort(error)) problem.textContent = `Could not list firmware: ${error.message}`;
    }
  }

  async function send(event) {
    event.preventDefault();
    const chosen = file.files[0];
    const target = name.value.trim();
    if (!chosen || !target) return;
    upload.disabled = true;
    upload.textContent = "Uploading…";
    try {
      await api(`/firmware/${part(target)}`, { method: "PUT", body: chosen });
      notify(`Uploaded ${target} (${byteSize(chosen.size)}).`);
      file.value = "";
      name.value = "";
      suggested = "";
      await load();
    } catch (error) {
      notify(`Could not upload ${target}: ${error.message}`, "error");
    } finally {
      upload.disabled = false;
      upload.textContent = "Upload";
    }
  }

  async function remove(target) {
    try {
      await api(`/firmware/${part(target)}`, { method: "DELETE" });
      notify(`Deleted ${target}.`);
      await load();
    } catch (error) {
      notify(`Could not delete ${target}: ${error.message}`, "error");
    }
  }

  load();
  return () => controller.abort();
}
