/**
 * An interval tree over inclusive [start, last] keys: the kernel's `interval_tree`
 * (`include/linux/interval_tree_generic.h`), as `mmu_interval_notifier` uses it.
 *
 * Written here rather than taken from @flatten-js/interval-tree because the order has to
 * be the kernel's: nodes sorted by `start` alone, equal starts in insertion order (the
 * rbtree descends right on equal keys), whereas that library orders by (low, high).
 *
 * An AVL tree keyed on (start, insertion number), each node augmented with the largest
 * `last` of its subtree, so a walk skips every subtree that ends before the query. The
 * walk is the kernel's `interval_tree_iter_first/next`: O(log n + k) when the overlapping
 * nodes are clustered, O(k log n) at worst. Insert and remove are O(log n); removal is by
 * node, so one of several identical intervals can be removed.
 *
 * The node is intrusive, as the kernel's `struct interval_tree_node` is embedded in
 * `struct mmu_interval_notifier`: what the tree holds extends IntervalTreeNode, so a
 * subscriber costs no second object and its keys are stored once (an implicit ODP MR
 * has tens of thousands of subscribers).
 *
 * @example
 *   class Range extends IntervalTreeNode { constructor(start: number, last: number, readonly tag: string) { super(start, last); } }
 *   const tree = new IntervalTree<Range>();
 *   const a = new Range(0, 4095, 'a');
 *   tree.insert(a);
 *   tree.insert(new Range(4096, 8191, 'b'));
 *   tree.overlapping(4000, 4100).map((r) => r.tag); // ['a', 'b']
 *   tree.remove(a);
 */
export class IntervalTreeNode {
  // The links are named after the kernel node's `rb` member, so that a subclass's own
  // fields (a notifier's, a driver's) do not collide with them.
  rbLeft: IntervalTreeNode | null = null;
  rbRight: IntervalTreeNode | null = null;
  rbHeight = 1;
  subtreeLast = 0;
  /** Insertion number: orders equal starts. */
  rbOrder = 0;
  /** Set by insert, cleared by remove: the opposite of the node's `RB_EMPTY_NODE`. */
  inTree = false;

  /** The keys: set before insert, not changed while in the tree. */
  constructor(public start = 0, public last = 0) {}
}

type Node = IntervalTreeNode;

export class IntervalTree<N extends IntervalTreeNode> {
  private root: Node | null = null;
  private inserted = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Insert `node` at its [start, last]; false if it is already in a tree. */
  insert(node: N): boolean {
    if (node.inTree) return false;
    node.rbLeft = node.rbRight = null;
    node.rbHeight = 1;
    node.subtreeLast = node.last;
    node.rbOrder = this.inserted++;
    node.inTree = true;
    this.root = insertInto(this.root, node);
    this.count++;
    return true;
  }

  /** Remove one node; false if it was not in this tree. */
  remove(node: N): boolean {
    if (!node.inTree) return false;
    const before = this.count;
    this.root = removeFrom(this.root, node, () => this.count--);
    if (this.count === before) return false;
    node.inTree = false;
    node.rbLeft = node.rbRight = null;
    return true;
  }

  /** Every node overlapping [first, last] (inclusive), in tree rbOrder. */
  overlapping(first: number, last: number): N[] {
    const out: N[] = [];
    walk(this.root, first, last, out as Node[]);
    return out;
  }

  /** Whether any node overlaps [first, last]: `interval_tree_iter_first() != NULL`. */
  anyOverlapping(first: number, last: number): boolean {
    let n = this.root;
    while (n && n.subtreeLast >= first) {
      if (n.rbLeft && n.rbLeft.subtreeLast >= first) {
        n = n.rbLeft;
        continue;
      }
      if (n.start > last) return false;
      if (n.last >= first) return true;
      n = n.rbRight;
    }
    return false;
  }

  /** Every node, in tree rbOrder. */
  values(): N[] {
    const out: N[] = [];
    walk(this.root, -Infinity, Infinity, out as Node[]);
    return out;
  }
}

function walk(n: Node | null, first: number, last: number, out: Node[]): void {
  while (n && n.subtreeLast >= first) {
    walk(n.rbLeft, first, last, out);
    if (n.start > last) return;
    if (n.last >= first) out.push(n);
    n = n.rbRight;
  }
}

const before = (a: Node, b: Node): boolean =>
  a.start < b.start || (a.start === b.start && a.rbOrder < b.rbOrder);

const height = (n: Node | null): number => (n ? n.rbHeight : 0);

function update(n: Node): void {
  n.rbHeight = 1 + Math.max(height(n.rbLeft), height(n.rbRight));
  let m = n.last;
  if (n.rbLeft && n.rbLeft.subtreeLast > m) m = n.rbLeft.subtreeLast;
  if (n.rbRight && n.rbRight.subtreeLast > m) m = n.rbRight.subtreeLast;
  n.subtreeLast = m;
}

function rotateRight(n: Node): Node {
  const l = n.rbLeft as Node;
  n.rbLeft = l.rbRight;
  l.rbRight = n;
  update(n);
  update(l);
  return l;
}

function rotateLeft(n: Node): Node {
  const r = n.rbRight as Node;
  n.rbRight = r.rbLeft;
  r.rbLeft = n;
  update(n);
  update(r);
  return r;
}

function balance(n: Node): Node {
  update(n);
  const bf = height(n.rbLeft) - height(n.rbRight);
  if (bf > 1) {
    const l = n.rbLeft as Node;
    if (height(l.rbLeft) < height(l.rbRight)) n.rbLeft = rotateLeft(l);
    return rotateRight(n);
  }
  if (bf < -1) {
    const r = n.rbRight as Node;
    if (height(r.rbRight) < height(r.rbLeft)) n.rbRight = rotateRight(r);
    return rotateLeft(n);
  }
  return n;
}

function insertInto(n: Node | null, node: Node): Node {
  if (!n) return node;
  if (before(node, n)) n.rbLeft = insertInto(n.rbLeft, node);
  else n.rbRight = insertInto(n.rbRight, node);
  return balance(n);
}

function removeMin(n: Node): Node | null {
  if (!n.rbLeft) return n.rbRight;
  n.rbLeft = removeMin(n.rbLeft);
  return balance(n);
}

function removeFrom(n: Node | null, node: Node, removed: () => void): Node | null {
  if (!n) return null;
  if (n === node) {
    removed();
    if (!n.rbLeft) return n.rbRight;
    if (!n.rbRight) return n.rbLeft;
    let min = n.rbRight;
    while (min.rbLeft) min = min.rbLeft;
    min.rbRight = removeMin(n.rbRight);
    min.rbLeft = n.rbLeft;
    return balance(min);
  }
  if (before(node, n)) n.rbLeft = removeFrom(n.rbLeft, node, removed);
  else n.rbRight = removeFrom(n.rbRight, node, removed);
  return balance(n);
}
