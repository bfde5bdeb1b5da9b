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
 * node handle, so one of several identical intervals can be removed.
 *
 * @example
 *   const tree = new IntervalTree<string>();
 *   const a = tree.insert(0, 4095, 'a');
 *   tree.insert(4096, 8191, 'b');
 *   tree.overlapping(4000, 4100); // ['a', 'b']
 *   tree.remove(a);
 */
export class IntervalTreeNode<T> {
  left: IntervalTreeNode<T> | null = null;
  right: IntervalTreeNode<T> | null = null;
  height = 1;
  subtreeLast: number;
  /** Cleared by remove: the node's `RB_EMPTY_NODE`. */
  inTree = true;

  constructor(
    readonly start: number,
    readonly last: number,
    readonly value: T,
    /** Insertion number: orders equal starts. */
    readonly order: number,
  ) {
    this.subtreeLast = last;
  }
}

type Node<T> = IntervalTreeNode<T>;

export class IntervalTree<T> {
  private root: Node<T> | null = null;
  private inserted = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Insert [start, last]; returns the handle `remove` takes. */
  insert(start: number, last: number, value: T): IntervalTreeNode<T> {
    const node = new IntervalTreeNode(start, last, value, this.inserted++);
    this.root = insertInto(this.root, node);
    this.count++;
    return node;
  }

  /** Remove one node; false if it was not in this tree. */
  remove(node: IntervalTreeNode<T>): boolean {
    if (!node.inTree) return false;
    const before = this.count;
    this.root = removeFrom(this.root, node, () => this.count--);
    if (this.count === before) return false;
    node.inTree = false;
    node.left = node.right = null;
    return true;
  }

  /** Values of every node overlapping [first, last] (inclusive), in tree order. */
  overlapping(first: number, last: number): T[] {
    const out: T[] = [];
    walk(this.root, first, last, out);
    return out;
  }

  /** Whether any node overlaps [first, last]: `interval_tree_iter_first() != NULL`. */
  anyOverlapping(first: number, last: number): boolean {
    let n = this.root;
    while (n && n.subtreeLast >= first) {
      if (n.left && n.left.subtreeLast >= first) {
        n = n.left;
        continue;
      }
      if (n.start > last) return false;
      if (n.last >= first) return true;
      n = n.right;
    }
    return false;
  }

  /** Every value, in tree order. */
  values(): T[] {
    const out: T[] = [];
    walk(this.root, -Infinity, Infinity, out);
    return out;
  }
}

function walk<T>(n: Node<T> | null, first: number, last: number, out: T[]): void {
  while (n && n.subtreeLast >= first) {
    walk(n.left, first, last, out);
    if (n.start > last) return;
    if (n.last >= first) out.push(n.value);
    n = n.right;
  }
}

const before = <T>(a: Node<T>, b: Node<T>): boolean =>
  a.start < b.start || (a.start === b.start && a.order < b.order);

const height = <T>(n: Node<T> | null): number => (n ? n.height : 0);

function update<T>(n: Node<T>): void {
  n.height = 1 + Math.max(height(n.left), height(n.right));
  let m = n.last;
  if (n.left && n.left.subtreeLast > m) m = n.left.subtreeLast;
  if (n.right && n.right.subtreeLast > m) m = n.right.subtreeLast;
  n.subtreeLast = m;
}

function rotateRight<T>(n: Node<T>): Node<T> {
  const l = n.left as Node<T>;
  n.left = l.right;
  l.right = n;
  update(n);
  update(l);
  return l;
}

function rotateLeft<T>(n: Node<T>): Node<T> {
  const r = n.right as Node<T>;
  n.right = r.left;
  r.left = n;
  update(n);
  update(r);
  return r;
}

function balance<T>(n: Node<T>): Node<T> {
  update(n);
  const bf = height(n.left) - height(n.right);
  if (bf > 1) {
    const l = n.left as Node<T>;
    if (height(l.left) < height(l.right)) n.left = rotateLeft(l);
    return rotateRight(n);
  }
  if (bf < -1) {
    const r = n.right as Node<T>;
    if (height(r.right) < height(r.left)) n.right = rotateRight(r);
    return rotateLeft(n);
  }
  return n;
}

function insertInto<T>(n: Node<T> | null, node: Node<T>): Node<T> {
  if (!n) return node;
  if (before(node, n)) n.left = insertInto(n.left, node);
  else n.right = insertInto(n.right, node);
  return balance(n);
}

function removeMin<T>(n: Node<T>): Node<T> | null {
  if (!n.left) return n.right;
  n.left = removeMin(n.left);
  return balance(n);
}

function removeFrom<T>(n: Node<T> | null, node: Node<T>, removed: () => void): Node<T> | null {
  if (!n) return null;
  if (n === node) {
    removed();
    if (!n.left) return n.right;
    if (!n.right) return n.left;
    let min = n.right;
    while (min.left) min = min.left;
    min.right = removeMin(n.right);
    min.left = n.left;
    return balance(min);
  }
  if (before(node, n)) n.left = removeFrom(n.left, node, removed);
  else n.right = removeFrom(n.right, node, removed);
  return balance(n);
}
