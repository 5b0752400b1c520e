// The registry, node by node (admins only): its values, its status, links to its children.

import { api, isAbort, part } from "./api.js";
import { emptyNote, h, replace, section } from "./dom.js";

const CHILDREN_SHOWN = 500;

const link = (segments) => `#/registry/${segments.map(part).join("/")}`;

function table(label, entries) {
  if (!entries.length) return emptyNote(`No ${label.toLowerCase()}.`);
  return h("div", { class: "table-scroll" },
    h("table", { class: "table", "aria-label": label },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Value"))),
      h("tbody", {}, entries.map(([name, value]) =>
        h("tr", {}, h("th", { scope: "row", class: "mono" }, name),
          h("td", { class: "mono wrap" }, typeof value === "string" ? value : JSON.stringify(value)))))));
}

export function registryPage(main, { args: [path] }) {
  const segments = path.split("/").filter(Boolean);
  document.title = `Registry /${segments.join("/")} · m2m`;
  const controller = new AbortController();
  const content = h("div", { class: "registry" }, h("p", { class: "muted" }, "Loading…"));
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Registry path" },
    h("a", { href: link([]) }, "registry"),
    segments.map((segment, index) => [" / ", index === segments.length - 1
      ? h("span", { "aria-current": "page" }, segment)
      : h("a", { href: link(segments.slice(0, index + 1)) }, segment)]));

  replace(main, h("div", { class: "page-head" }, h("h1", {}, "Registry")), crumbs, content);

  function childrenList(children) {
    const filter = h("input", { id: "registry-filter", type: "search", placeholder: "Filter…", autocomplete: "off" });
    const list = h("ul", { class: "children", "aria-label": "Children" });
    const count = h("p", { class: "muted small" });
    const names = children.map((child) => (typeof child === "string" ? child : child.name)).sort();
    const show = () => {
      const needle = filter.value.trim().toLowerCase();
      const matching = names.filter((name) => name.toLowerCase().includes(needle));
      replace(list, matching.slice(0, CHILDREN_SHOWN).map((name) =>
        h("li", {}, h("a", { href: link([...segments, name]), class: "mono" }, name))));
      count.textContent = matching.length > CHILDREN_SHOWN
        ? `${CHILDREN_SHOWN} of ${matching.length} shown: filter to find the others.`
        : `${matching.length} of ${names.length}`;
    };
    filter.addEventListener("input", show);
    show();
    if (!names.length) return emptyNote("No children.");
    return [h("div", { class: "field" }, h("label", { for: "registry-filter" }, "Filter children"), filter), count, list];
  }

  async function load() {
    try {
      const node = await api(`/registry/${segments.map(part).join("/")}`, { signal: controller.signal });
      replace(
        content,
        h("div", { class: "columns" },
          h("div", { class: "column" },
            section("Values",
              h("p", { class: "muted small" }, h("span", { class: "mono" }, node.path), " · ", node.status),
              table("Values", Object.entries(node.values ?? {})),
              node.withheld?.length > 0 && h("p", { class: "muted small" },
                `Withheld (secret): ${node.withheld.join(", ")}`))),
          h("div", { class: "column" }, section("Children", childrenList(node.children ?? [])))),
      );
    } catch (error) {
      if (isAbort(error)) return;
      const text = error.status === 404 ? `No node at /${segments.join("/")}.` : `Could not read the node: ${error.message}`;
      replace(content, h("p", { class: "form-error", role: "alert" }, text));
    }
  }

  load();
  return () => controller.abort();
}
