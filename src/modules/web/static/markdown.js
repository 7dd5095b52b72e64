// Model output as Markdown, built as DOM nodes.
//
// markdown-it (vendored in markdown-it.min.js, MIT) parses the text into tokens; this file
// turns the tokens it knows into elements and everything else into text. Its HTML renderer
// is never used, raw HTML in the text stays text (html: false), and no string is ever
// parsed as HTML here. Links are followed only to http(s) and mailto, with rel="noopener
// noreferrer"; images are shown as links and never loaded (they would tell their server the
// reader's address). While an answer streams in, the blocks whose source has not changed
// keep their nodes: only the block being written is built again.
"use strict";

const Markdown = (() => {
  const parser = window.markdownit({ html: false, linkify: false, typographer: false, breaks: true });

  const BLOCK_TAGS = new Set([
    "p", "ul", "ol", "li", "blockquote", "table", "thead", "tbody", "tr", "th", "td",
  ]);
  const INLINE_TAGS = new Set(["em", "strong", "s"]);
  const SCHEMES = new Set(["http:", "https:", "mailto:"]);
  const ALIGNMENTS = new Set(["left", "center", "right"]);

  function node(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  // An absolute http(s) or mailto URL, or null: relative and other schemes are not followed.
  function followable(href) {
    try {
      const url = new URL(href);
      return SCHEMES.has(url.protocol) ? url.href : null;
    } catch {
      return null;
    }
  }

  function link(href) {
    const url = followable(href || "");
    if (url === null) {
      const text = node("span", "link-refused");
      text.title = `Not followed: ${href}`;
      return text;
    }
    const anchor = node("a");
    anchor.href = url;
    anchor.rel = "noopener noreferrer";
    anchor.referrerPolicy = "no-referrer";
    anchor.target = "_blank";
    return anchor;
  }

  // An image is a link to it, named by its alt text: the page never fetches it.
  function imageLink(token) {
    const src = token.attrGet("src") || "";
    const alt = token.content || src;
    const anchor = link(src);
    anchor.classList.add("image-link");
    anchor.textContent = `Image: ${alt}`;
    if (anchor.tagName === "A") anchor.title = src;
    return anchor;
  }

  async function copy(button, code) {
    try {
      await navigator.clipboard.writeText(code);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => {
      button.textContent = "Copy";
    }, 2000);
  }

  function codeBlock(content, info) {
    const language = (info || "").trim().split(/\s+/)[0].replace(/[^\w+#.-]/g, "").slice(0, 40);
    const code = content.replace(/\n$/, "");
    const button = node("button", "small secondary copy", "Copy");
    button.type = "button";
    button.setAttribute("aria-label", language ? `Copy ${language} code` : "Copy code");
    button.addEventListener("click", () => copy(button, code));
    const head = node("div", "code-head");
    head.append(node("span", "code-language", language || "code"), button);
    const pre = node("pre");
    pre.tabIndex = 0; // wide code scrolls sideways: by keyboard too
    const text = node("code", null, code);
    if (language) text.dataset.language = language;
    pre.append(text);
    const block = node("div", "code-block");
    block.append(head, pre);
    return block;
  }

  function blockElement(token) {
    const heading = /^h([1-6])$/.exec(token.tag);
    // A message's headings sit under the page's own (h1, h2): # is h3, ## h4, and so on.
    if (heading) return node(`h${Math.min(6, Number(heading[1]) + 2)}`);
    const made = node(BLOCK_TAGS.has(token.tag) ? token.tag : "div");
    if (token.tag === "ol" && token.attrGet("start") !== null) {
      const start = Number(token.attrGet("start"));
      if (Number.isInteger(start) && start >= 0) made.start = start;
    }
    if (token.tag === "th" || token.tag === "td") {
      // markdown-it writes alignment as a style attribute, which the CSP refuses: a class.
      const align = /text-align:\s*(\w+)/.exec(token.attrGet("style") || "");
      if (align && ALIGNMENTS.has(align[1])) made.className = `align-${align[1]}`;
    }
    return made;
  }

  function renderInline(children, parent) {
    const stack = [parent];
    for (const token of children) {
      const top = stack[stack.length - 1];
      if (token.type === "text") top.append(token.content);
      else if (token.type === "softbreak" || token.type === "hardbreak") top.append(node("br"));
      else if (token.type === "code_inline") top.append(node("code", null, token.content));
      else if (token.type === "image") top.append(imageLink(token));
      else if (token.nesting === 1) {
        const made =
          token.type === "link_open"
            ? link(token.attrGet("href"))
            : node(INLINE_TAGS.has(token.tag) ? token.tag : "span");
        top.append(made);
        stack.push(made);
      } else if (token.nesting === -1) {
        if (stack.length > 1) stack.pop();
      } else if (token.content) top.append(token.content);
    }
  }

  // Tokens [start, end) of one top-level block, built into `parent`.
  function renderBlocks(tokens, start, end, parent) {
    const stack = [parent];
    for (let index = start; index < end; index += 1) {
      const token = tokens[index];
      const top = stack[stack.length - 1];
      if (token.type === "inline") renderInline(token.children || [], top);
      else if (token.type === "fence" || token.type === "code_block") {
        top.append(codeBlock(token.content, token.info));
      } else if (token.type === "hr") top.append(node("hr"));
      else if (token.nesting === 1) {
        if (token.hidden) {
          stack.push(top); // a tight list's paragraph: its text goes in the item
          continue;
        }
        const made = blockElement(token);
        if (token.tag === "table") {
          const scroller = node("div", "table-scroll");
          scroller.append(made);
          top.append(scroller);
        } else {
          top.append(made);
        }
        stack.push(made);
      } else if (token.nesting === -1) {
        if (stack.length > 1) stack.pop();
      } else if (token.content) top.append(token.content);
    }
  }

  // The top-level blocks of `text`: each its tokens' range and a key made of its kind and
  // its source lines (the same key, the same nodes).
  function blocksOf(text) {
    const tokens = parser.parse(text, {});
    const lines = text.split("\n");
    const blocks = [];
    let depth = 0;
    let start = 0;
    for (let index = 0; index < tokens.length; index += 1) {
      depth += tokens[index].nesting;
      if (depth !== 0) continue;
      const first = tokens[start];
      const source = first.map ? lines.slice(first.map[0], first.map[1]).join("\n") : null;
      blocks.push({
        key: source === null ? null : `${first.type}\u0000${source}`,
        start,
        end: index + 1,
      });
      start = index + 1;
    }
    return { tokens, blocks };
  }

  // A view of one message: `update(text)` with the whole text so far.
  class View {
    constructor(container) {
      this.container = container;
      this.rendered = []; // { key, nodes }
    }

    update(text) {
      const { tokens, blocks } = blocksOf(text);
      const next = blocks.map((block, index) => {
        const old = this.rendered[index];
        if (old && block.key !== null && old.key === block.key) return old;
        const fragment = document.createDocumentFragment();
        renderBlocks(tokens, block.start, block.end, fragment);
        return { key: block.key, nodes: [...fragment.childNodes] };
      });
      // Nodes that stay are neither moved nor rebuilt: no flicker, no jump.
      let child = this.container.firstChild;
      for (const wanted of next.flatMap((block) => block.nodes)) {
        if (wanted === child) child = child.nextSibling;
        else this.container.insertBefore(wanted, child);
      }
      while (child) {
        const after = child.nextSibling;
        child.remove();
        child = after;
      }
      this.rendered = next;
    }
  }

  function render(container, text) {
    const view = new View(container);
    view.update(text);
    return view;
  }

  return { View, render, followable };
})();
